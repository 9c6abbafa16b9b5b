//! The digest's charts, drawn by the bot itself into PNG images (no
//! browser, no system fonts): requests per day stacked by outcome, and how
//! long decisions took. Text is drawn with a built-in 5×7 pixel font at
//! twice its size, so a chart reads on a phone; every chart carries a text
//! alternative that says the same numbers.
//!
//! Labels come from the report (dates, counts, fixed words), never from a
//! runner: nothing here draws untrusted text.

use crate::core::digest::Report;

/// Width and height of every chart, in pixels.
pub const WIDTH: u32 = 960;
pub const HEIGHT: u32 = 540;

/// One chart, ready to upload.
#[derive(Debug, Clone)]
pub struct Chart {
    /// The file name it is uploaded as.
    pub name: &'static str,
    pub title: String,
    /// What it shows, in words (Slack's `alt_txt`, Matrix's `body`).
    pub alt: String,
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

type Rgb = [u8; 3];
const BACKGROUND: Rgb = [0xff, 0xff, 0xff];
const INK: Rgb = [0x22, 0x26, 0x2b];
const GRID: Rgb = [0xdd, 0xe0, 0xe4];
const APPROVED: Rgb = [0x2e, 0x9e, 0x44];
const DENIED: Rgb = [0xd1, 0x24, 0x2f];
const EXPIRED: Rgb = [0xe5, 0x8a, 0x00];
const CANCELLED: Rgb = [0x8a, 0x8f, 0x98];
const BAR: Rgb = [0x25, 0x63, 0xc9];

/// A 5×7 glyph: seven rows, the five low bits of each, leftmost first.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        '<' => [0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02],
        '>' => [0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '+' => [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        _ => [0; 7],
    }
}

/// A canvas of RGB pixels.
struct Canvas {
    w: u32,
    h: u32,
    px: Vec<u8>,
}

/// Text is drawn at this many pixels per font pixel.
const SCALE: u32 = 2;
/// One character's advance (5 columns and one of space).
const ADVANCE: u32 = 6 * SCALE;
const LINE: u32 = 7 * SCALE;

impl Canvas {
    fn new(w: u32, h: u32) -> Canvas {
        let mut px = Vec::with_capacity((w * h * 3) as usize);
        for _ in 0..w * h {
            px.extend_from_slice(&BACKGROUND);
        }
        Canvas { w, h, px }
    }

    fn rect(&mut self, x: u32, y: u32, w: u32, h: u32, c: Rgb) {
        for yy in y..(y + h).min(self.h) {
            for xx in x..(x + w).min(self.w) {
                let i = ((yy * self.w + xx) * 3) as usize;
                self.px[i..i + 3].copy_from_slice(&c);
            }
        }
    }

    fn text(&mut self, x: u32, y: u32, s: &str, c: Rgb) {
        for (n, ch) in s.chars().enumerate() {
            let gx = x + n as u32 * ADVANCE;
            for (row, bits) in glyph(ch).iter().enumerate() {
                for col in 0..5u32 {
                    if bits & (0x10 >> col) != 0 {
                        self.rect(gx + col * SCALE, y + row as u32 * SCALE, SCALE, SCALE, c);
                    }
                }
            }
        }
    }

    /// Text centred on `cx`.
    fn text_centred(&mut self, cx: u32, y: u32, s: &str, c: Rgb) {
        let w = s.chars().count() as u32 * ADVANCE;
        self.text(cx.saturating_sub(w / 2), y, s, c);
    }

    fn png(&self) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, self.w, self.h);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            // Writing to a Vec cannot fail but for a bug in the sizes.
            let Ok(mut w) = enc.write_header() else {
                return Vec::new();
            };
            if w.write_image_data(&self.px).is_err() {
                return Vec::new();
            }
        }
        out
    }
}

/// Bars over `labels` (each a stack of `(value, colour)`), with a title,
/// the largest total on the axis and an optional legend.
fn bars(
    title: &str,
    labels: &[String],
    stacks: &[Vec<(u64, Rgb)>],
    legend: &[(&str, Rgb)],
) -> Canvas {
    let mut c = Canvas::new(WIDTH, HEIGHT);
    c.text(24, 20, title, INK);
    let (left, right, top, bottom) = (80u32, WIDTH - 24, 70u32, HEIGHT - 90);
    let height = bottom - top;
    let max = stacks
        .iter()
        .map(|s| s.iter().map(|(v, _)| *v).sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    for (frac, label) in [
        (0u64, "0".to_string()),
        (1, (max / 2).to_string()),
        (2, max.to_string()),
    ] {
        let y = bottom - (height as u64 * frac / 2) as u32;
        c.rect(left, y, right - left, 1, GRID);
        let w = label.chars().count() as u32 * ADVANCE;
        c.text(
            left.saturating_sub(w + 8),
            y.saturating_sub(LINE / 2),
            &label,
            INK,
        );
    }
    let n = stacks.len().max(1) as u32;
    let slot = (right - left) / n;
    let bar = (slot * 2 / 3).max(2);
    for (i, stack) in stacks.iter().enumerate() {
        let x = left + i as u32 * slot + (slot - bar) / 2;
        let mut y = bottom;
        for (v, colour) in stack {
            let h = (height as u64 * v / max) as u32;
            y = y.saturating_sub(h);
            c.rect(x, y, bar, h, *colour);
        }
        let total: u64 = stack.iter().map(|(v, _)| *v).sum();
        if total > 0 {
            c.text_centred(
                x + bar / 2,
                y.saturating_sub(LINE + 4),
                &total.to_string(),
                INK,
            );
        }
        if let Some(l) = labels.get(i) {
            c.text_centred(x + bar / 2, bottom + 10, l, INK);
        }
    }
    let mut x = left;
    for (name, colour) in legend {
        c.rect(x, HEIGHT - 40, LINE, LINE, *colour);
        c.text(x + LINE + 8, HEIGHT - 40, name, INK);
        x += LINE + 8 + name.chars().count() as u32 * ADVANCE + 28;
    }
    c
}

/// The buckets of the time-to-decision chart: label and upper bound (ms).
pub const WAIT_BUCKETS: [(&str, i64); 6] = [
    ("<1M", 60_000),
    ("1-5M", 300_000),
    ("5-15M", 900_000),
    ("15-60M", 3_600_000),
    ("1-4H", 14_400_000),
    (">4H", i64::MAX),
];

/// The digest's charts.
pub fn charts(r: &Report) -> Vec<Chart> {
    let day_label = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.format("%m-%d").to_string())
            .unwrap_or_default()
    };
    // Per-day labels crowd beyond two weeks: then every few are shown.
    let every = r.per_day.len().div_ceil(14).max(1);
    let labels: Vec<String> = r
        .per_day
        .iter()
        .enumerate()
        .map(|(i, d)| {
            if i % every == 0 {
                day_label(d.start)
            } else {
                String::new()
            }
        })
        .collect();
    let stacks: Vec<Vec<(u64, Rgb)>> = r
        .per_day
        .iter()
        .map(|d| {
            vec![
                (d.approved, APPROVED),
                (d.denied, DENIED),
                (d.expired, EXPIRED),
                (d.cancelled, CANCELLED),
            ]
        })
        .collect();
    let per_day = bars(
        "REQUESTS PER DAY BY OUTCOME",
        &labels,
        &stacks,
        &[
            ("APPROVED", APPROVED),
            ("DENIED", DENIED),
            ("EXPIRED", EXPIRED),
            ("CANCELLED", CANCELLED),
        ],
    );
    let per_day_alt = format!(
        "Requests per day by outcome: {}",
        r.per_day
            .iter()
            .map(|d| format!(
                "{} {} approved, {} denied, {} expired, {} cancelled",
                day_label(d.start),
                d.approved,
                d.denied,
                d.expired,
                d.cancelled
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let wait_labels: Vec<String> = WAIT_BUCKETS.iter().map(|(l, _)| l.to_string()).collect();
    let wait_stacks: Vec<Vec<(u64, Rgb)>> = r.waits.iter().map(|n| vec![(*n, BAR)]).collect();
    let waits = bars(
        "TIME TO DECISION (REQUESTS)",
        &wait_labels,
        &wait_stacks,
        &[],
    );
    let waits_alt = format!(
        "Time to decision: {}",
        WAIT_BUCKETS
            .iter()
            .zip(&r.waits)
            .map(|((l, _), n)| format!("{} {n}", l.to_lowercase()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    vec![
        Chart {
            name: "requests-per-day.png",
            title: "Requests per day by outcome".into(),
            alt: per_day_alt,
            png: per_day.png(),
            width: WIDTH,
            height: HEIGHT,
        },
        Chart {
            name: "time-to-decision.png",
            title: "Time to decision".into(),
            alt: waits_alt,
            png: waits.png(),
            width: WIDTH,
            height: HEIGHT,
        },
    ]
}
