//! Unit tests of `choose` (moved out of the module file).

use super::*;

fn entry(path: &str, kind: FileKind) -> CatalogFile {
    let mut f = crate::format::catalog::tests::sample().files[0].clone();
    f.path = path.as_bytes().to_vec();
    f.kind = kind;
    f
}

/// The catalog `files()` and `taken` choose from.
const FILES: [(&str, FileKind); 7] = [
    ("src", FileKind::Directory),
    ("src/a.txt", FileKind::Regular),
    ("src/docs", FileKind::Directory),
    ("src/docs/b.txt", FileKind::Regular),
    ("src/docs/c.md", FileKind::Regular),
    ("src/[x]", FileKind::Regular),
    ("other/a.txt", FileKind::Regular),
];

fn files_of(list: &[(&str, FileKind)]) -> Vec<CatalogFile> {
    list.iter().map(|&(path, kind)| entry(path, kind)).collect()
}

fn files() -> Vec<CatalogFile> {
    files_of(&FILES)
}

fn taken(patterns: &[&str]) -> (Vec<&'static str>, Vec<usize>) {
    let only = Only::new(
        &patterns
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let files = files();
    let (taken, unmatched) = only.choose(&files);
    (
        FILES
            .iter()
            .zip(taken)
            .filter(|(_, t)| *t)
            .map(|((name, _), _)| *name)
            .collect(),
        unmatched,
    )
}

#[test]
fn a_name_glob_matches_at_any_depth_and_a_directory_takes_its_contents() {
    assert_eq!(
        taken(&["*.txt"]).0,
        ["src/a.txt", "src/docs/b.txt", "other/a.txt"]
    );
    assert_eq!(
        taken(&["docs"]).0,
        ["src/docs", "src/docs/b.txt", "src/docs/c.md"]
    );
    assert_eq!(taken(&["src/*.txt"]).0, ["src/a.txt"]);
    assert_eq!(taken(&["/other"]).0, ["other/a.txt"]);
    assert_eq!(taken(&["**/docs/*.md"]).0, ["src/docs/c.md"]);
    // A trailing '/' matches directories only.
    assert!(taken(&["a.txt/"]).0.is_empty());
}

#[test]
fn exact_paths_keep_working_even_with_glob_characters() {
    assert_eq!(taken(&["src/[x]"]).0, ["src/[x]"]);
    assert_eq!(
        taken(&["src/docs/"]).0,
        ["src/docs", "src/docs/b.txt", "src/docs/c.md"]
    );
    let only = Only::exact(&[b"src/docs".to_vec()]);
    let (t, unmatched) = only.choose(&files());
    assert_eq!(t.iter().filter(|&&t| t).count(), 3);
    assert!(unmatched.is_empty());
}

#[test]
fn patterns_that_take_nothing_are_named() {
    let (t, unmatched) = taken(&["*.txt", "nothing*", "src/docs/zz"]);
    assert_eq!(t.len(), 3);
    assert_eq!(unmatched, [1, 2]);
    let err = Only::new(&[b"a[".to_vec()]).unwrap_err().to_string();
    assert!(err.contains("--only 'a['"), "{err}");
}

/// A destination holding an older and a newer file, a symlink to
/// outside, and a file where a stored directory must go: what each
/// policy keeps, and that nothing on disk is changed or followed.
#[test]
fn existing_names_are_kept_never_followed_and_links_follow_their_targets() {
    use super::super::select::DataSource;
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().unwrap();
    let to = tmp.path().join("to");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(to.join("top")).unwrap();
    std::fs::write(&outside, b"outside").unwrap();
    let set_mtime = |path: &Path, secs: u64| {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
            .unwrap()
    };
    std::fs::write(to.join("top/old"), b"old").unwrap();
    set_mtime(&to.join("top/old"), 1_600_000_000);
    std::fs::write(to.join("top/new"), b"new").unwrap();
    std::fs::write(to.join("blk"), b"a file where a directory must go").unwrap();
    symlink(&outside, to.join("top/sym")).unwrap();
    let mut catalog = crate::format::catalog::tests::sample();
    catalog.files = files_of(&[
        ("top", FileKind::Directory),
        ("top/old", FileKind::Regular),
        ("top/new", FileKind::Regular),
        ("top/absent", FileKind::Regular),
        ("top/link", FileKind::HardLink),
        ("blk/inner", FileKind::Regular),
        ("top/sym", FileKind::Symlink),
    ]);
    catalog.files[4].hardlink_to = 2;
    let n = catalog.files.len();
    let kept_by = |existing| {
        let mut selection = Selection {
            sources: vec![DataSource::None; n],
            reading: Vec::new(),
            selected: vec![true; n],
            wanted: vec![true; n],
            rebuild: Vec::new(),
        };
        let mut report = Report::default();
        let kept = keep_existing(
            &to,
            &catalog,
            &vec![true; n],
            &mut selection,
            existing,
            &mut report,
        )
        .unwrap();
        for (i, (&k, &s)) in kept.iter().zip(&selection.selected).enumerate() {
            assert!(!(k && s), "{i}: kept and selected");
        }
        let whys: Vec<(String, KeptWhy)> = report
            .kept
            .iter()
            .map(|k| (String::from_utf8_lossy(&k.path).into_owned(), k.why))
            .collect();
        (whys, selection.selected, selection.wanted)
    };
    let (whys, selected, wanted) = kept_by(Existing::Keep);
    assert_eq!(
        whys,
        [
            ("blk/inner".to_string(), KeptWhy::Blocked),
            ("top/link".to_string(), KeptWhy::TargetKept),
            ("top/new".to_string(), KeptWhy::Exists),
            ("top/old".to_string(), KeptWhy::Exists),
            ("top/sym".to_string(), KeptWhy::Exists),
        ]
    );
    // The existing directory is restored into, its metadata left alone.
    assert_eq!(selected, [false, false, false, true, false, false, false]);
    assert_eq!(wanted, selected);
    let (whys, selected, _) = kept_by(Existing::ReplaceOlder);
    assert_eq!(
        whys,
        [
            ("blk/inner".to_string(), KeptWhy::Blocked),
            ("top/link".to_string(), KeptWhy::TargetKept),
            ("top/new".to_string(), KeptWhy::NotOlder),
            ("top/sym".to_string(), KeptWhy::NotOlder),
        ]
    );
    assert_eq!(selected, [false, true, false, true, false, false, false]);
    // Nothing was changed on disk, nothing followed.
    assert_eq!(std::fs::read(&outside).unwrap(), b"outside");
    assert_eq!(std::fs::read(to.join("top/old")).unwrap(), b"old");
    assert!(std::fs::symlink_metadata(to.join("blk")).unwrap().is_file());
    // Replace (the default) keeps nothing and looks at nothing.
    let (whys, selected, _) = kept_by(Existing::Replace);
    assert!(whys.is_empty());
    assert_eq!(selected, vec![true; n]);
}

#[test]
fn strip_drops_leading_components() {
    assert_eq!(strip(b"a/b/c", 0), Some(&b"a/b/c"[..]));
    assert_eq!(strip(b"a/b/c", 1), Some(&b"b/c"[..]));
    assert_eq!(strip(b"a/b/c", 2), Some(&b"c"[..]));
    assert_eq!(strip(b"a/b/c", 3), None);
    assert_eq!(strip(b"a", 1), None);
}

#[test]
fn strip_components_follows_hard_links_and_skips_short_paths() {
    let mut catalog = crate::format::catalog::tests::sample();
    catalog.files = files_of(&[
        ("top", FileKind::Directory),
        ("top/f", FileKind::Regular),
        ("top/d/link", FileKind::HardLink),
        ("g", FileKind::Regular),
        ("top/d/link2", FileKind::HardLink),
    ]);
    catalog.files[2].hardlink_to = 1;
    catalog.files[4].hardlink_to = 3;
    let choice = Choice {
        strip_components: 1,
        ..Choice::default()
    };
    let mut report = Report::default();
    let chosen = choose(&catalog, &choice, &mut report).unwrap();
    assert_eq!(chosen.taken, [false, true, true, false, false]);
    let view = chosen.view.unwrap();
    assert_eq!(view.files[1].path, b"f");
    assert_eq!(view.files[2].path, b"d/link");
    assert_eq!(view.files[2].hardlink_to, 1);
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(report.errors[0].to_string().contains("top/d/link2"));
}
