// `sqlx::migrate!` embeds `../migrations` at compile time, but Cargo only rebuilds this crate when
// a file it already knows changes: a new migration would be left out of the binaries until some
// other change. Watching the directory picks up added files too.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
