//! The starter skills in `skills/` are compiled into the binary; this rebuilds it when
//! they change.

fn main() {
    println!("cargo:rerun-if-changed=../skills");
}
