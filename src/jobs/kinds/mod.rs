pub mod document_render;
pub mod file_digest;
pub mod noop;
pub mod sleep;
