// `sqlx::migrate!` embeds migrations/ at compile time, but on stable Rust cargo does not know the
// macro read those files: without this, an added or edited migration would not trigger a rebuild.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
