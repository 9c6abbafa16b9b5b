//! The web page's script keeps its own copy of the hidden-character table
//! (it must, to show `⟨U+202E⟩` in the browser). This checks that copy
//! against the one table in `holdpoint_shared::text`, with Node's own
//! Unicode data: every character the table hides, the page hides too, and
//! the table misses no format character Unicode knows.

use holdpoint_shared::text::{HIDDEN, is_suspicious};
use std::io::Write;
use std::process::{Command, Stdio};

const SCRIPT: &str = include_str!("../assets/app.js");

/// The expression that builds the page's character class.
fn page_class() -> &'static str {
    let start = SCRIPT
        .find("const HIDDEN_CLASS =")
        .expect("app.js defines HIDDEN_CLASS")
        + "const HIDDEN_CLASS =".len();
    let end = start + SCRIPT[start..].find(';').expect("the definition ends");
    &SCRIPT[start..end]
}

const CHECK: &str = r#"
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const re = new RegExp('^' + (CLASS) + '$', 'u');
const cf = /^\p{Cf}$/u;
const inTable = (cp) => input.table.some(([lo, hi]) => cp >= lo && cp <= hi);
const out = { pageMisses: [], pageHidesVisible: [], tableMissesFormat: [] };
for (const cp of input.hidden) if (!re.test(String.fromCodePoint(cp))) out.pageMisses.push(cp);
for (const cp of input.visible) if (re.test(String.fromCodePoint(cp))) out.pageHidesVisible.push(cp);
for (let cp = 0; cp <= 0x10FFFF; cp++) {
  if (cp >= 0xD800 && cp <= 0xDFFF) continue;
  if (cf.test(String.fromCodePoint(cp)) && !inTable(cp)) out.tableMissesFormat.push(cp);
}
process.stdout.write(JSON.stringify(out));
"#;

#[test]
fn the_web_page_hides_every_character_the_shared_table_hides() {
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node {
        assert!(
            std::env::var_os("HOLDPOINT_REQUIRE_BROWSER").is_none(),
            "node is required (HOLDPOINT_REQUIRE_BROWSER is set)"
        );
        eprintln!("skipped: node is not installed, so the page's table cannot be checked");
        return;
    }
    let mut hidden: Vec<u32> = (0u32..0x20).chain(0x7F..0xA0).collect();
    for &(lo, hi, _) in HIDDEN {
        hidden.extend(lo..=hi);
    }
    let visible: Vec<u32> = "a Zé→✔中🎉-_/.~".chars().map(|c| c as u32).collect();
    assert!(
        visible
            .iter()
            .all(|&u| char::from_u32(u).is_some_and(|c| !is_suspicious(c)))
    );
    let table: Vec<(u32, u32)> = HIDDEN.iter().map(|&(lo, hi, _)| (lo, hi)).collect();
    let input = serde_json::json!({ "hidden": hidden, "visible": visible, "table": table });
    let program = CHECK.replace("CLASS", page_class());
    let mut child = Command::new("node")
        .args(["-e", &program])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("node ends");
    assert!(out.status.success(), "the check script failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let hex = |k: &str| -> Vec<String> {
        v[k].as_array()
            .expect("list")
            .iter()
            .filter_map(|x| x.as_u64())
            .map(|u| format!("U+{u:04X}"))
            .collect()
    };
    assert_eq!(
        hex("pageMisses"),
        Vec::<String>::new(),
        "the page shows these as they are"
    );
    assert_eq!(hex("pageHidesVisible"), Vec::<String>::new());
    assert_eq!(
        hex("tableMissesFormat"),
        Vec::<String>::new(),
        "format characters the shared table does not list"
    );
}
