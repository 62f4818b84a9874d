//! `sqlx::migrate!` embeds `migrations/` at compile time but cannot tell cargo
//! to watch the directory on stable Rust, so a new migration file would not be
//! picked up until something else rebuilt this crate.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
