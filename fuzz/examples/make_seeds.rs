//! Write the seed corpus: `cargo run --example make_seeds` (from `fuzz/`) writes every seed of
//! `slipway_fuzz::seeds` to `seeds/<target>/<name>`, replacing files of the same name.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for (target, name, bytes) in slipway_fuzz::seeds::all() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), &bytes)?;
        println!("seeds/{target}/{name}: {} bytes", bytes.len());
    }
    Ok(())
}
