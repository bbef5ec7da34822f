//! `cargo xtask bench [--quick]`: every measurement is a ratio against a baseline doing
//! the same work in the same run. Writes `BENCHMARKS.md` and `bench.json` (with
//! `--quick`, small sizes and files under `target/`, to check the harness only).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use state_api::{
    BackendContext, KeyedStateBackend, ListStateDescriptor, MapStateDescriptor, Result, ValueStateDescriptor,
};
use state_fs::{FsCheckpointStorage, FsOptions};
use state_heap::HeapKeyedStateBackend;

struct Row {
    name: String,
    ours: f64,
    baseline: f64,
    unit: &'static str,
    baseline_name: &'static str,
    target: &'static str,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.ours / self.baseline.max(f64::MIN_POSITIVE)
    }
}

fn ns_per_op(ops: u64, f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_nanos() as f64 / ops.max(1) as f64
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let n: u64 = if quick { 20_000 } else { 1_000_000 };
    let keys: u64 = if quick { 2_000 } else { 100_000 };
    let mut rows = Vec::new();
    heap_ops(n, keys, &mut rows)?;
    sync_part(n, &mut rows)?;
    full_snapshot(n, &mut rows)?;
    report(&rows, quick, n);
    Ok(())
}

fn heap_ops(n: u64, keys: u64, rows: &mut Vec<Row>) -> Result<()> {
    let ctx = BackendContext::single(128);
    let mut b = HeapKeyedStateBackend::<u64>::new(&ctx)?;
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    let l = b.register(ListStateDescriptor::<u64>::new("l"))?;
    let m = b.register(MapStateDescriptor::<u32, u64>::new("m"))?;
    let mut row = |name: &str, ours: f64, baseline: f64| {
        rows.push(Row {
            name: name.into(),
            ours,
            baseline,
            unit: "ns/op",
            baseline_name: "std HashMap",
            target: "≤ 3×",
        });
    };

    let mut hv: HashMap<u64, u64> = HashMap::new();
    let base = ns_per_op(n, || {
        for i in 0..n {
            hv.insert(i % keys, i);
        }
    });
    let ours = ns_per_op(n, || {
        for i in 0..n {
            b.set_current_key(&(i % keys)).unwrap();
            b.value(&v).update(i).unwrap();
        }
    });
    row("value update", ours, base);
    let base = ns_per_op(n, || {
        for i in 0..n {
            black_box(hv.get(&(i % keys)));
        }
    });
    let ours = ns_per_op(n, || {
        for i in 0..n {
            b.set_current_key(&(i % keys)).unwrap();
            black_box(b.value(&v).get().unwrap());
        }
    });
    row("value get", ours, base);

    let mut hl: HashMap<u64, Vec<u64>> = HashMap::new();
    let base = ns_per_op(n, || {
        for i in 0..n {
            hl.entry(i % keys).or_default().push(i);
        }
    });
    let ours = ns_per_op(n, || {
        for i in 0..n {
            b.set_current_key(&(i % keys)).unwrap();
            b.list(&l).add(i).unwrap();
        }
    });
    row("list add", ours, base);
    let reads = keys * 10;
    let base = ns_per_op(reads, || {
        for i in 0..reads {
            black_box(hl.get(&(i % keys)).cloned());
        }
    });
    let ours = ns_per_op(reads, || {
        for i in 0..reads {
            b.set_current_key(&(i % keys)).unwrap();
            black_box(b.list(&l).get().unwrap());
        }
    });
    row("list get (whole list)", ours, base);

    let mut hm: HashMap<u64, HashMap<u32, u64>> = HashMap::new();
    let base = ns_per_op(n, || {
        for i in 0..n {
            hm.entry(i % keys).or_default().insert((i / keys) as u32 % 16, i);
        }
    });
    let ours = ns_per_op(n, || {
        for i in 0..n {
            b.set_current_key(&(i % keys)).unwrap();
            b.map(&m).put((i / keys) as u32 % 16, i).unwrap();
        }
    });
    row("map put", ours, base);
    let base = ns_per_op(n, || {
        for i in 0..n {
            black_box(hm.get(&(i % keys)).and_then(|m| m.get(&((i / keys) as u32 % 16))));
        }
    });
    let ours = ns_per_op(n, || {
        for i in 0..n {
            b.set_current_key(&(i % keys)).unwrap();
            black_box(b.map(&m).get(&((i / keys) as u32 % 16)).unwrap());
        }
    });
    row("map get", ours, base);
    let base = ns_per_op(keys, || {
        for k in 0..keys {
            black_box(
                hm.get(&k)
                    .map(|m| m.iter().map(|(a, b)| u64::from(*a) + b).sum::<u64>()),
            );
        }
    });
    let ours = ns_per_op(keys, || {
        for k in 0..keys {
            b.set_current_key(&k).unwrap();
            black_box(
                b.map(&m)
                    .iter()
                    .unwrap()
                    .map(|e| e.map(|(a, b)| u64::from(a) + b).unwrap())
                    .sum::<u64>(),
            );
        }
    });
    row("map iterate (per key)", ours, base);
    Ok(())
}

fn populated(n: u64) -> Result<HeapKeyedStateBackend<u64>> {
    let mut b = HeapKeyedStateBackend::<u64>::new(&BackendContext::single(128))?;
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    for k in 0..n {
        b.set_current_key(&k)?;
        b.value(&v).update(k)?;
    }
    Ok(b)
}

fn sync_part(n: u64, rows: &mut Vec<Row>) -> Result<()> {
    let mut b = populated(n)?;
    let mut times: Vec<Duration> = (0..9)
        .map(|i| {
            let t = Instant::now();
            let pending = b.snapshot(i).unwrap();
            let e = t.elapsed();
            drop(pending);
            e
        })
        .collect();
    times.sort();
    rows.push(Row {
        name: format!("heap snapshot synchronous part, {n} entries (median of 9)"),
        ours: times[4].as_secs_f64() * 1e6,
        baseline: 1000.0,
        unit: "µs",
        baseline_name: "1 ms target",
        target: "< 1×",
    });
    Ok(())
}

fn full_snapshot(n: u64, rows: &mut Vec<Row>) -> Result<()> {
    let mut b = populated(n)?;
    let dir = std::env::temp_dir().join(format!("state-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let io = |e| state_api::StateError::from_io("bench scratch dir", e);
    std::fs::create_dir_all(&dir).map_err(io)?;
    let storage = FsCheckpointStorage::open(dir.to_str().unwrap_or("."), "bench", FsOptions::default())?;
    let t = Instant::now();
    let handle = b.snapshot(1)?.run(&storage)?;
    let write = t.elapsed();
    let bytes = handle.stream.size();
    // Baseline: the same number of bytes written sequentially to a local file, 256 KiB at a time.
    let raw_path = dir.join("raw");
    let chunk = vec![7u8; 256 * 1024];
    let t = Instant::now();
    {
        let mut f = std::fs::File::create(&raw_path).map_err(io)?;
        let mut left = bytes as usize;
        while left > 0 {
            let k = left.min(chunk.len());
            std::io::Write::write_all(&mut f, &chunk[..k]).map_err(io)?;
            left -= k;
        }
    }
    let raw_write = t.elapsed();
    let t = Instant::now();
    let mut restored = HeapKeyedStateBackend::<u64>::restore(&BackendContext::single(128), &[handle], &storage)?;
    restored.register(ValueStateDescriptor::<u64>::new("v"))?;
    let restore = t.elapsed();
    let t = Instant::now();
    black_box(std::fs::read(&raw_path).map_err(io)?);
    let raw_read = t.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    let mbps = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e6;
    rows.push(Row {
        name: format!("full snapshot write, {n} entries ({bytes} bytes, local disk via state-fs)"),
        ours: mbps(write),
        baseline: mbps(raw_write),
        unit: "MB/s",
        baseline_name: "raw sequential file write",
        target: "≥ 0.5×",
    });
    rows.push(Row {
        name: format!("full restore, {n} entries (local disk via state-fs, into typed heap state)"),
        ours: mbps(restore),
        baseline: mbps(raw_read),
        unit: "MB/s",
        baseline_name: "raw sequential file read",
        target: "≥ 0.5×",
    });
    Ok(())
}

fn report(rows: &[Row], quick: bool, n: u64) {
    let machine = format!(
        "{} cores, {}",
        std::thread::available_parallelism().map(|p| p.get()).unwrap_or(1),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                .split(':')
                .nth(1)
                .unwrap_or("")
                .trim()
                .to_string()))
            .unwrap_or_else(|| "unknown CPU".into())
    );
    let mut md = String::new();
    md.push_str("# Benchmarks\n\nGenerated by `cargo xtask bench` (release build). Every figure is a ratio against a baseline measured in the same run.\n\n");
    md.push_str(&format!("Machine: {machine}. Operations: {n} per row.\n\n"));
    md.push_str("| benchmark | ours | baseline | unit | ratio | target |\n|---|---:|---:|---|---:|---|\n");
    let mut json = String::from("[\n");
    for (i, r) in rows.iter().enumerate() {
        md.push_str(&format!(
            "| {} | {:.1} | {:.1} ({}) | {} | {:.2}× | {} |\n",
            r.name,
            r.ours,
            r.baseline,
            r.baseline_name,
            r.unit,
            r.ratio(),
            r.target
        ));
        json.push_str(&format!(
            "  {{\"name\": {:?}, \"ours\": {:.3}, \"baseline\": {:.3}, \"baseline_name\": {:?}, \"unit\": {:?}, \"ratio\": {:.4}, \"target\": {:?}}}{}\n",
            r.name,
            r.ours,
            r.baseline,
            r.baseline_name,
            r.unit,
            r.ratio(),
            r.target,
            if i + 1 < rows.len() { "," } else { "" }
        ));
    }
    json.push_str("]\n");
    print!("{md}");
    let (md_path, json_path) = if quick {
        ("target/bench-quick.md", "target/bench-quick.json")
    } else {
        ("BENCHMARKS.md", "bench.json")
    };
    let _ = std::fs::create_dir_all("target");
    if let Err(e) = std::fs::write(md_path, &md).and_then(|_| std::fs::write(json_path, &json)) {
        eprintln!("bench: cannot write {md_path}: {e}");
    } else {
        eprintln!("bench: wrote {md_path} and {json_path}");
    }
}
