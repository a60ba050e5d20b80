//! Files compiled into the binary: the starter skills in `skills/`, the browser UI in
//! `web/`, and the migrations. Cargo does not see into `include_dir!` and `migrate!` on
//! its own; this rebuilds the server when any of them changes.

fn main() {
    println!("cargo:rerun-if-changed=../skills");
    println!("cargo:rerun-if-changed=../web");
    println!("cargo:rerun-if-changed=../migrations");
}
