//! Choosing what to back up: the rules `--exclude`, `--exclude-from`,
//! `--exclude-caches`, `--exclude-if-present`, `--one-file-system` and
//! `--exclude-larger-than` turn into a `Selection`, which the walk asks
//! about every name below a source. What a rule leaves out is listed in
//! `Walk::excluded` with the reason, and never becomes an entry.
//!
//! Rules (gitignore-like for patterns; tar's for the rest):
//! - A pattern without a `/` (a trailing one aside) matches a name at any
//!   depth: `*.tmp`, `node_modules`, `core.[0-9]*`.
//! - A pattern with a `/` elsewhere is anchored to the source root: it
//!   matches the path below the source given (`build/out` matches
//!   `SRC/build/out`, not `SRC/x/build/out`); a leading `/` is allowed
//!   (`/build`). `**` matches any number of directories (`**/cache/*`,
//!   `logs/**/*.gz`); `*`, `?` and `[...]` never match a `/`.
//! - A trailing `/` matches directories only (`tmp/`).
//! - An excluded directory is excluded with everything in it.
//! - `\` escapes the next character; a leading `!` (gitignore's negation)
//!   is refused rather than misread: write `\!` for a name that starts
//!   with `!`.
//! - `--exclude-caches`: a directory holding a `CACHEDIR.TAG` whose first
//!   43 bytes are the signature keeps the directory and the tag, not the
//!   rest (tar's `--exclude-caches`). A file of that name without the
//!   signature changes nothing.
//! - `--exclude-if-present NAME`: a directory that contains NAME is left
//!   out entirely, NAME included (tar's `--exclude-tag-all`, restic's and
//!   borg's `--exclude-if-present`).
//! - `--one-file-system`: a directory on another filesystem than its
//!   source (another `st_dev`: a mount point, a btrfs subvolume) is kept as
//!   an empty directory, as tar does; a non-directory on another
//!   filesystem (a bind-mounted file) is left out.
//! - `--exclude-larger-than SIZE`: regular files whose size is above SIZE
//!   are left out.
//!
//! A source named on the command line is always backed up: the rules
//! apply to what is below it (a source directory holding a cache tag or
//! an `--exclude-if-present` name is kept, with only the tag or nothing
//! in it).

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Name of the cache directory tag (<https://bford.info/cachedir/>).
pub const CACHEDIR_TAG_NAME: &str = "CACHEDIR.TAG";
/// The first bytes of a valid `CACHEDIR.TAG`.
pub const CACHEDIR_TAG_SIGNATURE: &[u8; 43] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// Why an entry was left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Matched `--exclude` (or a line of `--exclude-from`): the pattern as given.
    Pattern(String),
    /// A cache directory: its contents but the tag are left out.
    CacheDirectory,
    /// The directory contains the `--exclude-if-present` name.
    TagPresent(String),
    /// On another filesystem: a directory is kept empty, anything else left out.
    OtherFilesystem,
    /// A regular file larger than `--exclude-larger-than`.
    LargerThan(u64),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Pattern(p) => write!(f, "pattern '{p}'"),
            Reason::CacheDirectory => f.write_str("cache directory (CACHEDIR.TAG kept)"),
            Reason::TagPresent(name) => write!(f, "contains '{name}'"),
            Reason::OtherFilesystem => f.write_str("other filesystem"),
            Reason::LargerThan(limit) => write!(
                f,
                "larger than {} ({limit} bytes)",
                crate::units::human_bytes(*limit)
            ),
        }
    }
}

/// One name the walk left out (for a cache directory or a mount point:
/// the directory whose contents were left out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Excluded {
    /// The path it is (or would have been) stored under.
    pub path: Vec<u8>,
    pub reason: Reason,
    /// The name itself is stored; what was left out is its contents (a
    /// cache directory, a mount point, a source holding a tag).
    pub kept: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// `option` is the option that gave it (`--exclude`, `--only`).
    #[error("{option} '{pattern}': {why}")]
    BadPattern {
        option: &'static str,
        pattern: String,
        why: String,
    },
    #[error("--exclude-from {path}: {error}")]
    ExcludeFrom {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("--exclude-if-present '{0}': give a file name, without '/'")]
    BadTagName(String),
}

/// One compiled glob set and, by glob index, the index of its pattern
/// among those given and whether it matches directories only.
#[derive(Debug, Default)]
struct Patterns {
    set: GlobSet,
    of: Vec<(usize, bool)>,
}

impl Patterns {
    /// The patterns (their indexes among those given) matching `candidate`.
    fn matching<'a>(&'a self, candidate: &Path, is_dir: bool) -> impl Iterator<Item = usize> + 'a {
        let hits = if self.of.is_empty() {
            Vec::new()
        } else {
            self.set.matches(candidate)
        };
        hits.into_iter()
            .map(|i| self.of[i])
            .filter(move |&(_, dir_only)| is_dir || !dir_only)
            .map(|(pattern, _)| pattern)
    }
}

/// Gitignore-like patterns (the module's rules), compiled once: what
/// backup's `--exclude` and restore's `--only` match paths with.
#[derive(Debug, Default)]
pub struct Globs {
    /// Patterns without a `/`: matched against the name.
    by_name: Patterns,
    /// Patterns with a `/`: matched against the whole relative path.
    anchored: Patterns,
    /// The patterns as given.
    texts: Vec<String>,
}

impl Globs {
    /// Compile `patterns`, given to `option` (named in errors).
    pub fn new(option: &'static str, patterns: &[String]) -> Result<Globs, SelectError> {
        let mut by_name = (GlobSetBuilder::new(), Vec::new());
        let mut anchored = (GlobSetBuilder::new(), Vec::new());
        for (index, pattern) in patterns.iter().enumerate() {
            let bad = |why: &str| SelectError::BadPattern {
                option,
                pattern: pattern.clone(),
                why: why.to_string(),
            };
            if pattern.starts_with('!') {
                return Err(bad(
                    "negation ('!') is not supported; write '\\!' for a name starting with '!'",
                ));
            }
            let (body, dir_only) = match pattern.strip_suffix('/') {
                Some(body) => (body, true),
                None => (pattern.as_str(), false),
            };
            let is_anchored = body.contains('/');
            let body = if is_anchored {
                body.strip_prefix('/').unwrap_or(body)
            } else {
                body
            };
            if body.is_empty() {
                return Err(bad("an empty pattern matches nothing"));
            }
            let glob = GlobBuilder::new(body)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| bad(&e.kind().to_string()))?;
            let target = if is_anchored {
                &mut anchored
            } else {
                &mut by_name
            };
            target.0.add(glob);
            target.1.push((index, dir_only));
        }
        let build = |(builder, of): (GlobSetBuilder, Vec<(usize, bool)>)| {
            builder
                .build()
                .map(|set| Patterns { set, of })
                .map_err(|e| SelectError::BadPattern {
                    option,
                    pattern: e.glob().unwrap_or("").to_string(),
                    why: e.kind().to_string(),
                })
        };
        Ok(Globs {
            by_name: build(by_name)?,
            anchored: build(anchored)?,
            texts: patterns.to_vec(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// The patterns as given.
    pub fn texts(&self) -> &[String] {
        &self.texts
    }

    /// The indexes (among the patterns given) of every pattern matching
    /// `relative` ('/' separated; a name pattern is matched against its
    /// last component), in no particular order.
    pub fn matching<'a>(
        &'a self,
        relative: &'a [u8],
        is_dir: bool,
    ) -> impl Iterator<Item = usize> + 'a {
        let name = relative.rsplit(|&b| b == b'/').next().unwrap_or(relative);
        self.by_name
            .matching(Path::new(OsStr::from_bytes(name)), is_dir)
            .chain(
                self.anchored
                    .matching(Path::new(OsStr::from_bytes(relative)), is_dir),
            )
    }

    /// The first pattern (in the order given) matching `relative`.
    pub fn first_match(&self, relative: &[u8], is_dir: bool) -> Option<&str> {
        self.matching(relative, is_dir)
            .min()
            .map(|i| self.texts[i].as_str())
    }
}

/// What to leave out of a walk. `Selection::default()` leaves out nothing.
#[derive(Debug, Default)]
pub struct Selection {
    /// `--exclude` and the lines of `--exclude-from`, matched against the
    /// path below the source.
    patterns: Globs,
    pub exclude_caches: bool,
    pub tags: Vec<Vec<u8>>,
    pub one_file_system: bool,
    pub larger_than_bytes: Option<u64>,
}

impl Selection {
    /// Compile `patterns` (as given to `--exclude`) and the lines of each
    /// `--exclude-from` file; the other rules as given.
    pub fn new(
        patterns: &[String],
        exclude_from: &[PathBuf],
        exclude_caches: bool,
        tags: &[String],
        one_file_system: bool,
        larger_than_bytes: Option<u64>,
    ) -> Result<Selection, SelectError> {
        let mut all: Vec<String> = patterns.to_vec();
        for path in exclude_from {
            let text = fs::read(path).map_err(|error| SelectError::ExcludeFrom {
                path: path.clone(),
                error,
            })?;
            all.extend(patterns_in(&text));
        }
        let patterns = Globs::new("--exclude", &all)?;
        let mut tag_names = Vec::with_capacity(tags.len());
        for tag in tags {
            if tag.is_empty() || tag.contains('/') || tag == "." || tag == ".." {
                return Err(SelectError::BadTagName(tag.clone()));
            }
            tag_names.push(tag.as_bytes().to_vec());
        }
        Ok(Selection {
            patterns,
            exclude_caches,
            tags: tag_names,
            one_file_system,
            larger_than_bytes,
        })
    }

    /// Whether any rule is set (a plain walk skips all checks otherwise).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
            && !self.exclude_caches
            && self.tags.is_empty()
            && !self.one_file_system
            && self.larger_than_bytes.is_none()
    }

    /// The pattern that excludes a name below a source: `relative` is its
    /// path below the source root ('/' separated), `name` its last part.
    pub fn pattern_for(&self, relative: &[u8], name: &[u8], is_dir: bool) -> Option<Reason> {
        debug_assert!(relative.ends_with(name));
        self.patterns
            .first_match(relative, is_dir)
            .map(|p| Reason::Pattern(p.to_string()))
    }

    /// The `--exclude-if-present` name among a directory's `names`, if any.
    pub fn tag_in<'a>(&self, names: impl Iterator<Item = &'a [u8]> + Clone) -> Option<Reason> {
        self.tags.iter().find_map(|tag| {
            names
                .clone()
                .any(|n| n == tag.as_slice())
                .then(|| Reason::TagPresent(String::from_utf8_lossy(tag).into_owned()))
        })
    }
}

/// Patterns in the text of an `--exclude-from` file: one a line; blank
/// lines and lines starting with `#` are skipped; a trailing `\r` and
/// trailing spaces are dropped (gitignore), unless escaped with `\`.
fn patterns_in(text: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(text)
        .lines()
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .map(|line| {
            let trimmed = line.trim_end_matches(' ');
            if trimmed.ends_with('\\') && trimmed.len() < line.len() {
                &line[..trimmed.len() + 1]
            } else {
                trimmed
            }
        })
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Whether `path` is a cache directory tag: a regular file (not a
/// symlink) whose first 43 bytes are the signature.
pub fn is_cachedir_tag(path: &Path) -> bool {
    let Ok(metadata) = fs::symlink_metadata(path) else {
        return false;
    };
    if !metadata.file_type().is_file() {
        return false;
    }
    let mut head = [0u8; 43];
    match fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)) {
        Ok(()) => &head == CACHEDIR_TAG_SIGNATURE,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(patterns: &[&str]) -> Selection {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        Selection::new(&patterns, &[], false, &[], false, None).unwrap()
    }

    fn hit(s: &Selection, relative: &str, is_dir: bool) -> Option<String> {
        let name = relative.rsplit('/').next().unwrap();
        s.pattern_for(relative.as_bytes(), name.as_bytes(), is_dir)
            .map(|r| match r {
                Reason::Pattern(p) => p,
                other => panic!("{other:?}"),
            })
    }

    #[test]
    fn a_name_pattern_matches_at_any_depth() {
        let s = select(&["*.tmp"]);
        assert_eq!(hit(&s, "a.tmp", false).as_deref(), Some("*.tmp"));
        assert_eq!(hit(&s, "x/y/b.tmp", false).as_deref(), Some("*.tmp"));
        assert_eq!(hit(&s, "x/y/b.tmpx", false), None);
        assert_eq!(hit(&s, "d.tmp/keep", false), None);
    }

    #[test]
    fn a_pattern_with_a_slash_is_anchored() {
        let s = select(&["build/out", "/top"]);
        assert!(hit(&s, "build/out", true).is_some());
        assert!(hit(&s, "x/build/out", true).is_none());
        assert!(hit(&s, "top", false).is_some());
        assert!(hit(&s, "x/top", false).is_none());
        // '*' does not cross '/'.
        let s = select(&["src/*.o"]);
        assert!(hit(&s, "src/a.o", false).is_some());
        assert!(hit(&s, "src/sub/a.o", false).is_none());
    }

    #[test]
    fn double_star_crosses_directories() {
        let s = select(&["logs/**/*.gz", "**/cache"]);
        assert!(hit(&s, "logs/a.gz", false).is_some());
        assert!(hit(&s, "logs/2024/01/a.gz", false).is_some());
        assert!(hit(&s, "other/logs/a.gz", false).is_none());
        assert!(hit(&s, "cache", true).is_some());
        assert!(hit(&s, "a/b/cache", true).is_some());
    }

    #[test]
    fn a_trailing_slash_matches_directories_only() {
        let s = select(&["tmp/"]);
        assert!(hit(&s, "a/tmp", true).is_some());
        assert!(hit(&s, "a/tmp", false).is_none());
        let s = select(&["a/tmp/"]);
        assert!(hit(&s, "a/tmp", true).is_some());
        assert!(hit(&s, "a/tmp", false).is_none());
    }

    #[test]
    fn bad_patterns_are_named() {
        for bad in ["a[", "!keep", "/", "{a,b"] {
            let err = Selection::new(&[bad.to_string()], &[], false, &[], false, None)
                .expect_err(bad)
                .to_string();
            assert!(err.contains(&format!("'{bad}'")), "{err}");
        }
        let s = select(&["\\!bang"]);
        assert!(hit(&s, "!bang", false).is_some());
    }

    #[test]
    fn exclude_from_skips_comments_and_blank_lines() {
        let text = b"# build output\n*.o\n\n  \nbuild/\r\n#not-a-pattern\ntrail \\ \n";
        assert_eq!(patterns_in(text), ["*.o", "build/", "trail \\ "]);
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        let err = Selection::new(&[], std::slice::from_ref(&missing), false, &[], false, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");
    }

    #[test]
    fn cachedir_tag_needs_the_signature() {
        let tmp = tempfile::tempdir().unwrap();
        let good = tmp.path().join("good");
        fs::write(
            &good,
            b"Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n",
        )
        .unwrap();
        let bad = tmp.path().join("bad");
        fs::write(&bad, b"Signature: 8a477f597d28d172789f06886806bc5").unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        assert!(is_cachedir_tag(&good));
        assert!(!is_cachedir_tag(&bad));
        assert!(!is_cachedir_tag(&link));
        assert!(!is_cachedir_tag(&tmp.path().join("missing")));
    }
}
