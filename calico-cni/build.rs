//! The release build links this plugin with scripts/link/hot-first.sh, which places its
//! functions in the order of scripts/link/hot-symbols.txt (README "Release build"). Cargo
//! does not see that input: without this, a regenerated or merged list would not relink an
//! otherwise unchanged plugin, which would keep the old order.
fn main() {
    println!("cargo::rerun-if-changed=../scripts/link");
}
