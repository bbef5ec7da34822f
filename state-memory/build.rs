//! Compiles the RocksDB shim (feature `rocksdb`) against the headers of the RocksDB
//! source tree that `librocksdb-sys` builds, with the flags it builds with.

fn main() {
    println!("cargo:rerun-if-changed=shim/shared_memory.cc");
    #[cfg(feature = "rocksdb")]
    build_shim();
}

#[cfg(feature = "rocksdb")]
fn build_shim() {
    let sys_dir = std::env::var("DEP_ROCKSDB_CARGO_MANIFEST_DIR")
        .expect("librocksdb-sys exports its manifest directory (links = \"rocksdb\")");
    let include = std::path::Path::new(&sys_dir).join("rocksdb").join("include");
    let std_flag = std::env::var("ROCKSDB_CXX_STD").map_or("-std=c++20".to_owned(), |s| {
        if s.starts_with("-std=") { s } else { format!("-std={s}") }
    });
    println!("cargo:rerun-if-env-changed=ROCKSDB_CXX_STD");
    cc::Build::new()
        .cpp(true)
        .file("shim/shared_memory.cc")
        .include(include)
        .flag(&std_flag)
        .flag_if_supported("-fno-rtti")
        .define("NDEBUG", Some("1"))
        .warnings(false)
        .compile("state_memory_shim");
}
