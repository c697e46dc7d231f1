pub mod health;
pub mod management;
