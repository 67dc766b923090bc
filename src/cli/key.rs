//! `pbio key new FILE`, `pbio key change` and the `--key-file FILE` option
//! (`--key` is the same): the secret whose MACs authenticate a set
//! (docs/FORMAT.md, "MAC") and, with `backup --encrypt`, whose key wraps
//! the set's data key (docs/FORMAT.md 5.2). A set written with a key
//! carries a keyed BLAKE3 MAC in every label and in its catalog; restore,
//! verify and list given the key refuse a set whose MACs do not match.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::{CliResult, Failure, Outcome};
use crate::format::{mac_key, MacKey, KEY_FILE_BYTES_MIN};

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Write a new key: 32 random bytes from the kernel, into a file that
    /// must not exist yet (created with mode 0600). Keep a copy: a set
    /// written with it can only be checked with it.
    New {
        /// The key file to create.
        file: PathBuf,
    },
    /// Re-wrap an encrypted set's data key under a new key file, on every
    /// device given (disks, files, NBD exports): only the labels are
    /// rewritten, the data is not touched. Tapes are refused (a tape's
    /// label cannot be rewritten in place).
    Change {
        /// Devices of the set (give every device: one not given keeps the
        /// old key).
        #[arg(long = "dev", value_parser = super::parse_dev, required = true)]
        devs: Vec<crate::device::DeviceSpec>,
        /// The key file the set opens with now.
        #[arg(long = "key-file", visible_alias = "key", value_name = "FILE")]
        key: PathBuf,
        /// The key file it will open with (make one with `pbio key new`).
        #[arg(long = "new-key-file", value_name = "FILE")]
        new_key: PathBuf,
    },
}

/// Bytes of a key `pbio key new` writes.
const NEW_KEY_BYTES: usize = 32;
/// Largest key file read (a key is a secret, not a document).
const KEY_FILE_BYTES_MAX: u64 = 1 << 20;

pub fn run(command: KeyCommand) -> CliResult {
    match command {
        KeyCommand::New { file } => new_key(&file),
        KeyCommand::Change { devs, key, new_key } => change_key(&devs, &key, &new_key),
    }
}

/// `pbio key change`: check every device first (an encrypted label of one
/// set, not a tape, opened by the old key, or already by the new one: a
/// key change that stopped halfway, or was given some of the devices, is
/// finished by running it again), then rewrite each label still under the
/// old key with the data key wrapped under the new key, made durable, read
/// back and opened with the new key. Devices of the set not given are
/// named: they still open with the old key only.
fn change_key(specs: &[crate::device::DeviceSpec], old: &Path, new: &Path) -> CliResult {
    use crate::device::{self, Access, Mode};
    use crate::format::seal::{DataKey, UserKey, KDF_PASSPHRASE};
    use crate::restore::RestoreError;
    let old_user = UserKey::from_key_file(&read_key_file(old, "--key-file")?);
    let new_user = UserKey::from_key_file(&read_key_file(new, "--new-key-file")?);
    let failed = |error: RestoreError| Failure::Restore {
        doing: "key change: ",
        error,
    };
    // Each device's spec, label, and whether it still needs the re-wrap.
    let mut checked: Vec<(crate::device::DeviceSpec, crate::format::Label, bool)> =
        Vec::with_capacity(specs.len());
    let mut data: Option<DataKey> = None;
    for spec in specs {
        let dev = device::open(spec, Mode::Read).map_err(Failure::DeviceToRead)?;
        let name = dev.path().display().to_string();
        let label = crate::media::read_label(dev.as_ref()).map_err(|e| failed(e.into()))?;
        if !label.seal.is_sealed() {
            return Err(Failure::Usage(format!(
                "key change: set {} on device {name} is not encrypted (written without --encrypt): nothing to re-wrap",
                label.set_id
            )));
        }
        if label.seal.kdf == KDF_PASSPHRASE {
            return Err(Failure::Usage(format!(
                "key change: set {} on device {name} is encrypted with a passphrase (--passphrase-file): key change re-wraps sets written with --key-file only",
                label.set_id
            )));
        }
        if dev.access() == Access::Sequential {
            return Err(Failure::Usage(format!(
                "key change: {name} is a tape: its label cannot be rewritten in place, so its key cannot be changed (restore and back up again with the new key)"
            )));
        }
        if let Some((_, first, _)) = checked.first() {
            if first.set_id != label.set_id {
                return Err(Failure::Usage(format!(
                    "key change: device {name} holds set {}, not set {}: give the devices of one set",
                    label.set_id, first.set_id
                )));
            }
        }
        let (opened, pending) = match DataKey::unwrap(&label.seal, &old_user, label.set_id) {
            Ok(key) => (key, true),
            Err(_) => match DataKey::unwrap(&label.seal, &new_user, label.set_id) {
                Ok(key) => (key, false),
                Err(_) => {
                    return Err(failed(RestoreError::Encrypted {
                        device: name,
                        set: label.set_id.to_string(),
                        wrong_key: true,
                    }))
                }
            },
        };
        if data.as_ref().is_some_and(|d| *d != opened) {
            return Err(Failure::Data(format!(
                "key change: device {name}'s label holds another data key than the other devices of set {}: refusing to re-wrap (an altered label?)",
                label.set_id
            )));
        }
        data = Some(opened);
        checked.push((spec.clone(), label, pending));
    }
    let Some(data) = data else {
        return Ok(Outcome::Done);
    };
    for (spec, label, pending) in &checked {
        if !pending {
            outln!(
                "{}: set {} already opens with {} (an earlier key change)",
                spec.path.display(),
                label.set_id,
                new.display()
            );
            continue;
        }
        let dev = device::open(spec, Mode::Write).map_err(Failure::DeviceToWrite)?;
        let name = dev.path().display().to_string();
        let mut nonce = [0u8; crate::format::seal::NONCE_BYTES];
        crate::media::fill_random(&mut nonce);
        let rewrapped = crate::format::Label {
            seal: data.wrap(&new_user, label.set_id, label.seal.run_id, nonce),
            ..*label
        };
        crate::media::write_label(dev.as_ref(), &rewrapped).map_err(|e| failed(e.into()))?;
        dev.sync()
            .map_err(|e| Failure::Data(format!("key change: {name}: sync: {e}")))?;
        let back = crate::media::read_label(dev.as_ref()).map_err(|e| failed(e.into()))?;
        if DataKey::unwrap(&back.seal, &new_user, back.set_id).as_ref() != Ok(&data) {
            return Err(Failure::Data(format!(
                "key change: {name}: the label read back does not open with the new key"
            )));
        }
        outln!(
            "{name}: set {} now opens with {}",
            label.set_id,
            new.display()
        );
    }
    let (_, first, _) = &checked[0];
    let missing: Vec<String> = (0..first.device_count)
        .filter(|i| !checked.iter().any(|(_, l, _)| l.device_index == *i))
        .map(|i| i.to_string())
        .collect();
    if !missing.is_empty() {
        errln!(
            "pbio: key change: device index {} of set {} ({} devices) not given: it still opens with {} only; run key change on it too (devices done already are skipped)",
            missing.join(", "),
            first.set_id,
            first.device_count,
            old.display()
        );
    }
    Ok(Outcome::Done)
}

fn new_key(path: &Path) -> CliResult {
    let mut key = [0u8; NEW_KEY_BYTES];
    crate::media::fill_random(&mut key);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Failure::Usage(format!(
                    "key new {}: the file exists; refusing to overwrite a key",
                    path.display()
                ))
            } else {
                Failure::Usage(format!("key new {}: {e}", path.display()))
            }
        })?;
    file.write_all(&key)
        .and_then(|()| file.sync_all())
        .map_err(|e| Failure::Data(format!("key new {}: write: {e}", path.display())))?;
    outln!(
        "wrote a new {NEW_KEY_BYTES}-byte key to {} (mode 0600): give it as --key-file to backup (with --encrypt to encrypt), restore, verify and list; keep a copy apart from the media",
        path.display()
    );
    Ok(Outcome::Done)
}

/// The MAC key of `--key FILE`: derived from the file's contents, which
/// must hold at least `KEY_FILE_BYTES_MIN` bytes (a usage error naming
/// the file otherwise).
pub fn load(path: &Path) -> Result<MacKey, Failure> {
    let contents = read_key_file(path, "--key-file")?;
    // The key that opens encrypted sets (`--encrypt`), from the same file.
    crate::format::seal::keyring::set_user_key(crate::format::seal::UserKey::from_key_file(
        &contents,
    ));
    Ok(mac_key(&contents))
}

/// The contents of a key file given as `option`: at least
/// `KEY_FILE_BYTES_MIN` bytes, at most `KEY_FILE_BYTES_MAX` (a usage
/// error naming the file otherwise).
fn read_key_file(path: &Path, option: &str) -> Result<Vec<u8>, Failure> {
    let usage = |why: String| Failure::Usage(format!("{option} {}: {why}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| usage(e.to_string()))?;
    let mut contents = Vec::new();
    file.take(KEY_FILE_BYTES_MAX + 1)
        .read_to_end(&mut contents)
        .map_err(|e| usage(e.to_string()))?;
    if contents.len() < KEY_FILE_BYTES_MIN {
        return Err(usage(format!(
            "holds {} bytes; a key file needs at least {KEY_FILE_BYTES_MIN} (make one with `pbio key new FILE`)",
            contents.len()
        )));
    }
    if contents.len() as u64 > KEY_FILE_BYTES_MAX {
        return Err(usage(format!(
            "larger than {KEY_FILE_BYTES_MAX} bytes: not a key file"
        )));
    }
    Ok(contents)
}

/// `--passphrase-file FILE`: the passphrase (the file's contents, one
/// trailing newline dropped; not empty) held for the sets this process
/// writes or opens.
pub fn load_passphrase(path: Option<&Path>) -> Result<(), Failure> {
    let Some(path) = path else {
        return Ok(());
    };
    let usage =
        |why: String| Failure::Usage(format!("--passphrase-file {}: {why}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| usage(e.to_string()))?;
    let mut contents = Vec::new();
    file.take(KEY_FILE_BYTES_MAX + 1)
        .read_to_end(&mut contents)
        .map_err(|e| usage(e.to_string()))?;
    if contents.len() as u64 > KEY_FILE_BYTES_MAX {
        return Err(usage(format!(
            "larger than {KEY_FILE_BYTES_MAX} bytes: not a passphrase"
        )));
    }
    if contents.ends_with(b"\n") {
        contents.pop();
        if contents.ends_with(b"\r") {
            contents.pop();
        }
    }
    if contents.is_empty() {
        return Err(usage("is empty".to_string()));
    }
    crate::format::seal::keyring::set_passphrase(contents);
    Ok(())
}

/// `load` of an optional `--key`.
pub fn load_optional(path: Option<&Path>) -> Result<Option<MacKey>, Failure> {
    path.map(load).transpose()
}

/// Whether a set's MACs went unchecked: it carries MACs (`keyed`), no
/// `--key-file` was given, and it is not encrypted (an encrypted set's MACs
/// are keyed by its data key, opened by the key file or the passphrase,
/// and so always checked).
pub(super) fn macs_unchecked(key_given: bool, keyed: bool, label: &crate::format::Label) -> bool {
    !key_given && keyed && !label.seal.is_sealed()
}

/// Says (once, on stderr) that a set's MACs were not checked.
pub(super) fn say_macs_unchecked() {
    errln!("pbio: set is authenticated; give --key to check it");
}

/// An increment (`--since`) over an encrypted set must be encrypted too:
/// its catalog names every file of the tree, the unchanged ones of the
/// base included, and it holds the changed files' contents.
pub(super) fn check_since_encrypted(
    encrypt: bool,
    since: Option<&crate::source::incremental::Increment>,
) -> Result<(), Failure> {
    let Some(since) = since else {
        return Ok(());
    };
    let parent = since.parent();
    if !encrypt && crate::format::seal::keyring::data_key(parent).is_some() {
        return Err(Failure::Usage(format!(
            "--since: set {parent} is encrypted: give --encrypt too (an increment without it would hold the names of every file of the chain, and the changed files' contents, in the clear)"
        )));
    }
    Ok(())
}

/// `backup --encrypt`'s option rule: a key file or a passphrase.
pub(super) fn check_encrypt(encrypt: bool, has_key: bool) -> Result<(), Failure> {
    if encrypt && !has_key {
        return Err(Failure::Usage(
            "--encrypt needs --key-file FILE (make one with `pbio key new FILE`) or --passphrase-file FILE".to_string(),
        ));
    }
    Ok(())
}

/// A new set's encryption (`backup --encrypt`): a random data key, run id
/// and wrap nonce, wrapped by the key file's key or the passphrase's
/// (a random salt), loaded before (`load`, `load_passphrase`); the data
/// key is remembered for the run's own reads.
pub(super) fn new_set_encryption(
    set_id: crate::format::SetId,
) -> crate::format::seal::SetEncryption {
    use crate::format::seal::{keyring, SetEncryption};
    let mut salt = [0u8; 16];
    crate::media::fill_random(&mut salt);
    let user = keyring::new_set_key(salt)
        .expect("--encrypt's key or passphrase is loaded before the config (`check_encrypt`)");
    let mut random = [0u8; 52];
    crate::media::fill_random(&mut random);
    let e = SetEncryption::new(&user, set_id, random);
    keyring::insert(set_id, e.data_key.clone());
    e
}
