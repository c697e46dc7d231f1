//! What this binary is: reported by /info, /health/details and `app_build_info`.

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const GIT_SHA: &str = match option_env!("BALLAST_GIT_SHA") {
    Some(s) => s,
    None => "unknown",
};
pub const BUILD_TIME: &str = match option_env!("BALLAST_BUILD_TIME") {
    Some(s) => s,
    None => "unknown",
};
pub const RUSTC: &str = match option_env!("BALLAST_RUSTC_VERSION") {
    Some(s) => s,
    None => "unknown",
};

pub fn release_id() -> String {
    format!("{VERSION}+{GIT_SHA}")
}
