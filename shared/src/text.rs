//! The characters a reviewer cannot see, or cannot trust to look like what
//! they are, and how every door shows them: as `⟨U+202E⟩`.
//!
//! This is the one table. The shell walk flags the [`Hidden::Format`]
//! characters in a command (they can hide or reorder what it does); every
//! door that shows text to a person makes all of them visible. The web
//! page's script keeps a copy in its own syntax, and a test checks it
//! against this table.

/// What kind of hidden character a range holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hidden {
    /// Bidirectional controls, zero-width characters, the BOM, soft hyphens,
    /// tags: they hide text or change its order.
    Format,
    /// Spaces other than U+0020, blank fillers and variation selectors:
    /// they look like something they are not.
    LookAlike,
}

/// Every hidden character beyond the control characters (C0, DEL, C1,
/// which are always hidden), as inclusive ranges, in order.
pub const HIDDEN: &[(u32, u32, Hidden)] = &[
    (0x00A0, 0x00A0, Hidden::LookAlike),
    (0x00AD, 0x00AD, Hidden::Format),
    (0x034F, 0x034F, Hidden::LookAlike),
    (0x0600, 0x0605, Hidden::Format),
    (0x061C, 0x061C, Hidden::Format),
    (0x06DD, 0x06DD, Hidden::Format),
    (0x070F, 0x070F, Hidden::Format),
    (0x0890, 0x0891, Hidden::Format),
    (0x08E2, 0x08E2, Hidden::Format),
    (0x115F, 0x1160, Hidden::LookAlike),
    (0x1680, 0x1680, Hidden::LookAlike),
    (0x17B4, 0x17B5, Hidden::LookAlike),
    (0x180B, 0x180D, Hidden::LookAlike),
    (0x180E, 0x180E, Hidden::Format),
    (0x180F, 0x180F, Hidden::LookAlike),
    (0x2000, 0x200A, Hidden::LookAlike),
    (0x200B, 0x200F, Hidden::Format),
    (0x2028, 0x2029, Hidden::LookAlike),
    (0x202A, 0x202E, Hidden::Format),
    (0x202F, 0x202F, Hidden::LookAlike),
    (0x205F, 0x205F, Hidden::LookAlike),
    (0x2060, 0x2064, Hidden::Format),
    (0x2065, 0x2065, Hidden::LookAlike),
    (0x2066, 0x2069, Hidden::Format),
    (0x206A, 0x206F, Hidden::Format),
    (0x2800, 0x2800, Hidden::LookAlike),
    (0x3000, 0x3000, Hidden::LookAlike),
    (0x3164, 0x3164, Hidden::LookAlike),
    (0xFE00, 0xFE0F, Hidden::LookAlike),
    (0xFEFF, 0xFEFF, Hidden::Format),
    (0xFFA0, 0xFFA0, Hidden::LookAlike),
    (0xFFF9, 0xFFFB, Hidden::Format),
    (0x110BD, 0x110BD, Hidden::Format),
    (0x110CD, 0x110CD, Hidden::Format),
    (0x13430, 0x1343F, Hidden::Format),
    (0x1BCA0, 0x1BCA3, Hidden::Format),
    (0x1D173, 0x1D17A, Hidden::Format),
    (0xE0000, 0xE0FFF, Hidden::Format),
];

/// What `c` is, if it is hidden (control characters included, as
/// [`Hidden::Format`]; the ASCII space is not hidden).
pub fn hidden(c: char) -> Option<Hidden> {
    if c.is_control() {
        return Some(Hidden::Format);
    }
    let u = c as u32;
    if u < 0xA0 {
        return None;
    }
    let i = HIDDEN.partition_point(|&(_, hi, _)| hi < u);
    match HIDDEN.get(i) {
        Some(&(lo, _, kind)) if lo <= u => Some(kind),
        _ if c.is_whitespace() => Some(Hidden::LookAlike),
        _ => None,
    }
}

/// Whether `c` could hide text, reorder it or look like something else
/// than it is.
pub fn is_suspicious(c: char) -> bool {
    hidden(c).is_some()
}

/// Shows suspicious characters as `⟨U+XXXX⟩`. Newlines and tabs stay when
/// `multiline` (a code block shows them faithfully); otherwise they are
/// shown as `⟨U+000A⟩` too, so one-line fields stay on one line.
pub fn visible(s: &str, multiline: bool) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if multiline && (c == '\n' || c == '\t') {
            out.push(c);
        } else if is_suspicious(c) {
            let _ = write!(out, "⟨U+{:04X}⟩", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_ordered_and_ranges_do_not_overlap() {
        for w in HIDDEN.windows(2) {
            assert!(w[0].0 <= w[0].1 && w[0].1 < w[1].0, "{:X?}", w);
        }
    }

    #[test]
    fn every_listed_and_every_control_character_is_hidden_and_letters_are_not() {
        for &(lo, hi, kind) in HIDDEN {
            for u in lo..=hi {
                if let Some(c) = char::from_u32(u) {
                    assert_eq!(hidden(c), Some(kind), "U+{u:04X}");
                }
            }
        }
        for c in ['\0', '\t', '\n', '\u{1b}', '\u{7f}', '\u{85}', '\u{9f}'] {
            assert_eq!(hidden(c), Some(Hidden::Format));
        }
        for c in ['a', ' ', 'é', '→', '✔', '中', '🎉'] {
            assert_eq!(hidden(c), None, "{c}");
        }
        assert_eq!(
            visible("a\u{202E}b\nc", false),
            "a⟨U+202E⟩b⟨U+000A⟩c".to_string()
        );
        assert_eq!(visible("a\tb\nc", true), "a\tb\nc");
    }
}
