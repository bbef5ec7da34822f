//! Writes each reader's valid seed to `corpus/<target>/seed`, the starting corpus of
//! `cargo fuzz run <target>` (a checksummed format is out of reach from random bytes).

fn main() -> std::io::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for name in state_fuzz::readers::NAMES {
        let target = name.replace(", ", "_").replace(' ', "_");
        let dir = root.join(&target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("seed"), state_fuzz::readers::named(name).seed)?;
        println!("{}", dir.display());
    }
    Ok(())
}
