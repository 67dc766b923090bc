//! Human units on the command line: sizes in powers of 1024, rates in
//! bytes/s; stored names as a terminal may show them (`shown_name`).

/// Parse `1048576`, `4K`, `1M`, `2G`, `1T` (also `KiB`, `MB` spellings):
/// powers of 1024. Returns a message naming the bad input on failure.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "'{text}' is not a size (expected e.g. 4096, 64K, 1M, 2G, 1T)"
        ));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is too large a number"))?;
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        "P" | "PB" | "PIB" => 50,
        _ => {
            return Err(format!(
                "'{text}': unknown unit '{suffix}' (use K, M, G, T)"
            ))
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{text}' does not fit in 64 bits"))
}

/// Format bytes for humans: `1.50 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("4K").unwrap(), 4096);
        assert_eq!(parse_size("1m").unwrap(), 1 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1T").unwrap(), 1 << 40);
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("3X").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("100000P").is_err());
    }

    #[test]
    fn human() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.50 KiB");
    }
}

/// A stored name (raw bytes from a catalog, a record or a source walk) as
/// it may be printed on a terminal: printable characters as they are,
/// backslash, control characters and invalid UTF-8 escaped (`\e`, `\n`,
/// `\u{9b}`, `\xff`), so a name crafted with escape sequences cannot
/// drive the terminal and two different names never print the same.
/// JSON output keeps names exact instead (serde_json escapes them).
pub fn shown_name(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\u{1b}' => out.push_str("\\e"),
                c if c.is_control() || is_invisible(c) => out.extend(c.escape_debug()),
                c => out.push(c),
            }
        }
        escape_invalid(chunk.invalid(), &mut out);
    }
    out
}

/// A path (a source, or one built from stored names) as `shown_name` shows it.
pub fn shown_path(path: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    shown_name(path.as_os_str().as_bytes())
}

/// A message made elsewhere (an error that may quote a stored name,
/// already escaped or not) made safe for one terminal line: control
/// characters (line ends included) and invisible format characters
/// escaped as `shown_name` does; backslashes are left alone, so a name
/// that `shown_name` escaped in it reads the same.
pub fn shown_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{1b}' => out.push_str("\\e"),
            c if c.is_control() || is_invisible(c) => out.extend(c.escape_debug()),
            c => out.push(c),
        }
    }
    out
}

/// Format characters that change how a terminal or a reader sees the
/// text around them (bidirectional overrides, zero-width marks).
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

fn escape_invalid(bytes: &[u8], out: &mut String) {
    use std::fmt::Write;
    for b in bytes {
        let _ = write!(out, "\\x{b:02x}");
    }
}

#[cfg(test)]
mod name_tests {
    use super::shown_name;

    #[test]
    fn names_are_escaped_for_the_terminal() {
        assert_eq!(shown_name(b"plain/file.txt"), "plain/file.txt");
        assert_eq!(shown_name("caf\u{e9}".as_bytes()), "caf\u{e9}");
        assert_eq!(shown_name(b"a\x1b[31mred"), "a\\e[31mred");
        assert_eq!(shown_name(b"new\nline\ttab\r"), "new\\nline\\ttab\\r");
        assert_eq!(shown_name(b"bad\xffutf8"), "bad\\xffutf8");
        assert_eq!(shown_name(b"back\\slash"), "back\\\\slash");
        assert_eq!(shown_name("\u{9b}31m".as_bytes()), "\\u{9b}31m");
        assert_eq!(shown_name("rtl\u{202e}txt".as_bytes()), "rtl\\u{202e}txt");
        // Distinct names stay distinct once escaped.
        assert_ne!(shown_name(b"a\\x41"), shown_name(b"a\x41"));
        assert_ne!(shown_name(b"a\\e"), shown_name(b"a\x1b"));
    }

    #[test]
    fn messages_are_made_one_safe_line() {
        use super::shown_line;
        assert_eq!(shown_line("open a\u{1b}[2Jb: gone"), "open a\\e[2Jb: gone");
        assert_eq!(shown_line("x\ny\rz\u{202e}"), "x\\ny\\rz\\u{202e}");
        // A name shown_name escaped already is left as it is.
        let escaped = format!("open {}: EIO", shown_name(b"a\\b\x1b"));
        assert_eq!(shown_line(&escaped), escaped);
    }
}
