pub mod noop;
pub mod sleep;
