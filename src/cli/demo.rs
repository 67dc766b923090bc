//! `pbio demo`: the embedded default. File devices in a temporary
//! directory, a generated tree of mixed file sizes, backup, restore,
//! verify, a byte-for-byte comparison, and the numbers.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use super::{backup, restore, CliResult, Failure, Outcome, SetArgs};
use crate::device::DeviceSpec;
use crate::plan::{Balance, Order, Strategy};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where to put the tree and devices (default: a new temporary directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Number of file devices.
    #[arg(long, default_value_t = 4)]
    pub devices: usize,
    /// Size of the largest generated file, MiB.
    #[arg(long, default_value_t = 96)]
    pub large_mib: u64,
    /// Number of small files (1-64 KiB).
    #[arg(long, default_value_t = 2000)]
    pub small_files: usize,
}

/// xorshift64*: deterministic filler, not for anything but test data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Failure {
    Failure::Data(format!("demo: {what} {}: {e}", path.display()))
}

fn write_file(path: &Path, size: u64, rng: &mut Rng) -> Result<(), Failure> {
    let mut f = fs::File::create(path).map_err(|e| io("create", path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).map_err(|e| io("write", path, e))?;
        left -= n as u64;
    }
    Ok(())
}

/// Generate the demo tree; returns its total bytes.
fn generate(root: &Path, large_mib: u64, small_files: usize) -> Result<u64, Failure> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut total = 0;
    fs::create_dir_all(root.join("big")).map_err(|e| io("mkdir", root, e))?;
    let large = large_mib << 20;
    write_file(&root.join("big/large.bin"), large, &mut rng)?;
    total += large;
    for i in 0..12 {
        let size = (1 << 20) + rng.next() % (8 << 20);
        write_file(&root.join(format!("big/medium-{i:02}.bin")), size, &mut rng)?;
        total += size;
    }
    for i in 0..small_files {
        let dir = root.join(format!("small/d{:02}", i % 32));
        if i < 32 {
            fs::create_dir_all(&dir).map_err(|e| io("mkdir", &dir, e))?;
        }
        let size = 1 + rng.next() % (64 << 10);
        write_file(&dir.join(format!("f{i:05}.dat")), size, &mut rng)?;
        total += size;
    }
    write_file(&root.join("empty"), 0, &mut rng)?;
    std::os::unix::fs::symlink("big/large.bin", root.join("link-to-large"))
        .map_err(|e| io("symlink", root, e))?;
    Ok(total)
}

fn compare(a: &Path, b: &Path) -> Result<Vec<String>, Failure> {
    let wa = crate::source::walk(&[a.to_path_buf()]).map_err(|e| Failure::Data(e.to_string()))?;
    let wb = crate::source::walk(&[b.to_path_buf()]).map_err(|e| Failure::Data(e.to_string()))?;
    let mut diffs = Vec::new();
    if wa.entries.len() != wb.entries.len() {
        diffs.push(format!(
            "{} entries vs {}",
            wa.entries.len(),
            wb.entries.len()
        ));
    }
    for (x, y) in wa.entries.iter().zip(&wb.entries) {
        let name = crate::units::shown_name(&x.path);
        if x.path != y.path
            || x.kind != y.kind && !matches!(x.kind, crate::source::EntryKind::File { .. })
        {
            diffs.push(format!("{name}: differs in name or kind"));
            continue;
        }
        if let crate::source::EntryKind::File { .. } = x.kind {
            let (xs, ys) = (x.source(), y.source());
            let da = fs::read(&xs).map_err(|e| io("read", &xs, e))?;
            let db = fs::read(&ys).map_err(|e| io("read", &ys, e))?;
            if da != db {
                diffs.push(format!("{name}: content differs"));
            }
        }
    }
    Ok(diffs)
}

pub fn run(args: DemoArgs) -> CliResult {
    if args.devices == 0 {
        return Err(Failure::Usage("demo: --devices must be at least 1".into()));
    }
    let temp;
    let dir = match &args.dir {
        Some(d) => {
            fs::create_dir_all(d).map_err(|e| io("mkdir", d, e))?;
            d.clone()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("pbio-demo")
                .tempdir()
                .map_err(|e| Failure::Data(format!("demo: temp dir: {e}")))?;
            temp.path().to_path_buf()
        }
    };
    let src = dir.join("src").join("tree");
    outln!("demo: generating a tree under {}", src.display());
    let total = generate(&src, args.large_mib, args.small_files)?;
    // Enough room for each device's share plus record headers and the catalog.
    let per_device = (total / args.devices as u64) * 5 / 4 + (64 << 20);
    let devs: Vec<DeviceSpec> = (0..args.devices)
        .map(|i| DeviceSpec {
            path: dir.join(format!("dev{i}.img")),
            size_bytes: Some(per_device),
            rate_bytes_per_sec: None,
            early_warning_bytes: None,
            timeout_secs: None,
        })
        .collect();
    outln!(
        "demo: backing up {} over {} file devices",
        crate::units::human_bytes(total),
        args.devices
    );
    let mut backup_args = backup::BackupArgs::with_defaults(SetArgs {
        sources: vec![src.clone()],
        devs: devs.clone(),
        changer: None,
        strategy: Strategy::Fill,
        order: Order::Desc,
        balance: Balance::Bytes,
        chunk: 1 << 20,
        since: None,
        json: false,
        select: Default::default(),
    });
    // The demo owns its directory: a second run over the same --dir
    // overwrites the set the first one left there.
    backup_args.force = true;
    backup::run(backup_args)?;
    let out = dir.join("restored");
    outln!("demo: restoring into {}", out.display());
    let code = restore::run_restore(restore::RestoreArgs {
        devs: devs.clone(),
        library: Default::default(),
        to: out.clone(),
        force: false,
        only: Vec::new(),
        allow_no_match: false,
        strip_components: 0,
        keep_old_files: false,
        overwrite_newer_only: false,
        scan: false,
        keep_partial: false,
        json: false,
        open: Default::default(),
    })?;
    if code != Outcome::Done {
        return Ok(code);
    }
    outln!("demo: verifying every record and file digest");
    let code = restore::run_verify(restore::VerifyArgs {
        devs,
        library: Default::default(),
        json: false,
        scan: false,
        open: Default::default(),
    })?;
    if code != Outcome::Done {
        return Ok(code);
    }
    let diffs = compare(&src, &out.join("tree"))?;
    if diffs.is_empty() {
        outln!("demo: restored tree is identical to the source");
        Ok(Outcome::Done)
    } else {
        for d in &diffs {
            errln!("demo: {d}");
        }
        Ok(Outcome::Incomplete)
    }
}
