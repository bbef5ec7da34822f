//! `cargo xtask stress [GIB]`: long-running checks that do not belong in CI. Writes a
//! list of more than 2^31 bytes (default 2.25 GiB) for one key into the RocksDB
//! backend (RocksJava cannot: its limit is 2^31 bytes), reads it back and checks every
//! element.

use std::time::Instant;

use state_api::{BackendContext, KeyedStateBackend, ListStateDescriptor, Result, StateError};

fn main() -> Result<()> {
    #[cfg(not(feature = "rocksdb"))]
    return Err(StateError::InvalidArgument("build with the `rocksdb` feature".into()));
    #[cfg(feature = "rocksdb")]
    big_list()
}

#[cfg(feature = "rocksdb")]
fn big_list() -> Result<()> {
    use state_rocksdb::{RocksDbConfig, RocksDbKeyedStateBackend};
    const ELEMENT: usize = 1 << 20;
    let gib: f64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2.25);
    let elements = (gib * 1024.0) as usize;
    let total = elements * ELEMENT;
    println!(
        "stress: one list of {elements} elements x 1 MiB = {total} bytes (2^31 = {})",
        1u64 << 31
    );
    let mut b = RocksDbKeyedStateBackend::<u64>::new(&BackendContext::single(128), RocksDbConfig::default())?;
    let l = b.register(ListStateDescriptor::<String>::new("big"))?;
    b.set_current_key(&1)?;
    let t = Instant::now();
    for i in 0..elements {
        let c = char::from(b'a' + (i % 26) as u8);
        b.list(&l).add(std::iter::repeat_n(c, ELEMENT).collect())?;
    }
    println!("  appended in {:.1?}", t.elapsed());
    let t = Instant::now();
    let back = b.list(&l).get()?;
    println!("  read back in {:.1?}", t.elapsed());
    let mut bytes = 0usize;
    for (i, e) in back.iter().enumerate() {
        let c = b'a' + (i % 26) as u8;
        if e.len() != ELEMENT || !e.bytes().all(|x| x == c) {
            return Err(StateError::InvalidArgument(format!("element {i} came back wrong")));
        }
        bytes += e.len();
    }
    if back.len() != elements || bytes != total || (total as u64) <= (1u64 << 31) {
        return Err(StateError::InvalidArgument(format!(
            "read {} elements, {bytes} bytes",
            back.len()
        )));
    }
    println!("stress: OK, {bytes} bytes (> 2^31) written and read back intact");
    Ok(())
}
