pub mod compress;
pub mod headers;
pub mod limits;
pub mod observe;
pub mod red;
