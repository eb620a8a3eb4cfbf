// Migrations are embedded by `sqlx::migrate!` at compile time: rebuild when one is added or
// changed, or binaries keep applying the old set.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
