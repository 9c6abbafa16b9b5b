//! Programs the walk must look inside: wrappers that run another command,
//! shells and interpreters that run code, SQL clients, and the builtins that
//! change the shell's own state.

use super::{Analyzer, Invocation, Output, Scope, Stdin, UNKNOWN, Word, shorten};
use crate::sql;
use crate::verdict::{Decision, Risk};

/// How a wrapper's own options look, so the wrapped command can be found.
struct WrapperSpec {
    names: &'static [&'static str],
    /// Options that take a value (`-u root`, `--user=root`).
    value_opts: &'static [&'static str],
    /// Options whose value is shell code (`flock -c 'cmd'`).
    code_opts: &'static [&'static str],
    /// Positional words between the options and the command (`timeout 5 cmd`).
    skip_positionals: usize,
    /// Stop option parsing at the first non-option (all of these do).
    /// `NAME=value` words before the command are environment assignments.
    takes_assignments: bool,
}

const WRAPPERS: &[WrapperSpec] = &[
    WrapperSpec {
        names: &["sudo", "doas", "pkexec"],
        value_opts: &[
            "-u",
            "-g",
            "-C",
            "-D",
            "-h",
            "-p",
            "-r",
            "-t",
            "-T",
            "-U",
            "--user",
            "--group",
            "--close-from",
            "--chdir",
            "--host",
            "--prompt",
            "--role",
            "--type",
            "--command-timeout",
            "--other-user",
        ],
        code_opts: &[],
        skip_positionals: 0,
        takes_assignments: true,
    },
    WrapperSpec {
        names: &["nice"],
        value_opts: &["-n", "--adjustment"],
        code_opts: &[],
        skip_positionals: 0,
        takes_assignments: false,
    },
    WrapperSpec {
        names: &[
            "nohup",
            "setsid",
            "unbuffer",
            "caffeinate",
            "proxychains",
            "proxychains4",
            "torsocks",
            "tsocks",
            "builtin",
            "catchsegv",
            "pv-run",
            "sg-run",
            "fakeroot",
        ],
        value_opts: &[],
        code_opts: &[],
        skip_positionals: 0,
        takes_assignments: false,
    },
    WrapperSpec {
        names: &["timeout"],
        value_opts: &["-s", "-k", "--signal", "--kill-after"],
        code_opts: &[],
        skip_positionals: 1,
        takes_assignments: false,
    },
    WrapperSpec {
        names: &["time"],
        value_opts: &["-f", "-o", "--format", "--output"],
        code_opts: &[],
        skip_positionals: 0,
        takes_assignments: false,
    },
    WrapperSpec {
        names: &["stdbuf"],
        value_opts: &["-i", "-o", "-e", "--input", "--output", "--error"],
        code_opts: &[],
        skip_positionals: 0,
        takes_assignments: false,
    },
    WrapperSpec {
        names: &["ionice"],
        value_opts: &["-c", "-n", "-p", "-P", "-u", "--class", "--classdata"],
        code_opts: &[],
        skip_positionals: 0,
        takes_assignments: false,
    },
    WrapperSpec {
        names: &["chrt"],
        value_opts: &["-T", "-P", "-D"],
        code_opts: &[],
        skip_positionals: 1,
        takes_assignments: false,
    },
    WrapperSpec {
        names: &["taskset"],
        value_opts: &[],
        code_opts: &[],
        skip_positionals: 1,
        takes_assignments: false,
    },
    WrapperSpec {
        names: &["chroot"],
        value_opts: &["--userspec", "--groups"],
        code_opts: &[],
        skip_positionals: 1,
        takes_assignments: false,
    },
    WrapperSpec {
        names: &["flock"],
        value_opts: &["-w", "-E", "--timeout", "--conflict-exit-code"],
        code_opts: &["-c", "--command"],
        skip_positionals: 1,
        takes_assignments: false,
    },
    WrapperSpec {
        names: &["su"],
        value_opts: &[
            "-s",
            "-g",
            "-G",
            "--shell",
            "--group",
            "--supp-group",
            "-w",
            "--whitelist-environment",
        ],
        code_opts: &["-c", "--command", "--session-command"],
        skip_positionals: 0,
        takes_assignments: false,
    },
    WrapperSpec {
        names: &["runuser"],
        value_opts: &["-u", "-g", "-G", "-s", "--user", "--group", "--shell"],
        code_opts: &["-c", "--command"],
        skip_positionals: 0,
        takes_assignments: false,
    },
    WrapperSpec {
        names: &["script"],
        value_opts: &[
            "-E",
            "-I",
            "-O",
            "-T",
            "-t",
            "--log-io",
            "--log-in",
            "--log-out",
            "--log-timing",
            "--echo",
        ],
        code_opts: &["-c", "--command"],
        skip_positionals: 0,
        takes_assignments: false,
    },
    WrapperSpec {
        names: &["strace", "ltrace"],
        value_opts: &[
            "-o", "-e", "-p", "-s", "-u", "-a", "-b", "-E", "-I", "-O", "-P", "-S", "-X",
        ],
        code_opts: &[],
        skip_positionals: 0,
        takes_assignments: false,
    },
];

const SHELLS: &[&str] = &[
    "sh", "bash", "zsh", "dash", "ksh", "mksh", "ash", "rbash", "yash", "posh", "lksh", "oksh",
    "hush",
];

/// Where a wrapper's options (from `start`) end: the index of the command
/// word, or past a `--`.
fn options_end(args: &[Word], start: usize, value_opts: &[&str], flags: &[&str]) -> usize {
    let mut i = start;
    while i < args.len() {
        let t = args[i].text.as_str();
        if t == "--" {
            return i + 1;
        }
        if value_opts.contains(&t) {
            i += 2;
        } else if flags.contains(&t) || (t.starts_with('-') && t.len() > 1) {
            i += 1;
        } else {
            break;
        }
    }
    i
}

/// Tools whose `run`/`exec` subcommand runs another command in a project
/// environment: the command is judged as if run directly.
const RUNNERS: &[(&str, &[&str])] = &[
    ("uv", &["run"]),
    ("poetry", &["run"]),
    ("pdm", &["run"]),
    ("pipenv", &["run"]),
    ("hatch", &["run"]),
    ("rye", &["run"]),
    ("conda", &["run"]),
    ("mamba", &["run"]),
    ("micromamba", &["run"]),
    ("bundle", &["exec"]),
    ("mise", &["exec", "x"]),
    ("asdf", &["exec"]),
    ("direnv", &["exec"]),
    ("devbox", &["run"]),
    ("nix", &["shell", "develop"]),
];

const INTERPRETERS: &[(&str, &[&str])] = &[
    ("elixir", &["-e", "--eval"]),
    ("erl", &["-eval"]),
    ("python", &["-c"]),
    ("pypy", &["-c"]),
    ("node", &["-e", "--eval", "-p", "--print"]),
    ("nodejs", &["-e", "--eval", "-p", "--print"]),
    ("bun", &["-e", "--eval", "-p", "--print"]),
    ("deno", &["eval"]),
    ("perl", &["-e", "-E"]),
    ("ruby", &["-e"]),
    ("php", &["-r"]),
    ("lua", &["-e"]),
    ("luajit", &["-e"]),
    ("Rscript", &["-e"]),
    ("osascript", &["-e"]),
    (
        "pwsh",
        &["-c", "-command", "-Command", "-EncodedCommand", "-e", "-ec"],
    ),
    (
        "powershell",
        &["-c", "-command", "-Command", "-EncodedCommand", "-e", "-ec"],
    ),
    ("tclsh", &[]),
    ("expect", &["-c"]),
    ("jshell", &[]),
    ("groovy", &["-e"]),
    ("julia", &["-e", "--eval"]),
];

/// Words in inline code that point at destruction or command execution.
const CODE_DANGER: &[&str] = &[
    "rmtree",
    "os.remove",
    "os.unlink",
    "unlink(",
    "rmdir",
    "os.system",
    "subprocess",
    "popen",
    "exec(",
    "execSync",
    "spawnSync",
    "child_process",
    "fs.rm",
    "rmSync",
    "unlinkSync",
    "system(",
    "`",
    "File.delete",
    "FileUtils.rm",
    "shutil.move",
    "truncate",
    "DROP ",
    "drop ",
    "rm -",
    "Remove-Item",
    "Invoke-Expression",
    "iex ",
    "DownloadString",
    "eval(",
    "/etc/",
    ".ssh",
    ".aws",
    "credentials",
    "os.environ",
    "process.env",
    "ENV[",
    "%ENV",
    "getenv",
];

/// Programs that print, store or send the value of a secret variable given to
/// them, with the risk and what it means.
const LEAKERS: &[(&str, Risk, &str)] = &[
    (
        "echo",
        Risk::High,
        "prints a variable that looks like a secret",
    ),
    (
        "printf",
        Risk::High,
        "prints a variable that looks like a secret",
    ),
    (
        "cat",
        Risk::High,
        "prints a variable that looks like a secret",
    ),
    (
        "tee",
        Risk::High,
        "writes a variable that looks like a secret",
    ),
    (
        "logger",
        Risk::High,
        "logs a variable that looks like a secret",
    ),
    (
        "wall",
        Risk::High,
        "broadcasts a variable that looks like a secret",
    ),
    (
        "curl",
        Risk::Medium,
        "sends a variable that looks like a secret over the network",
    ),
    (
        "wget",
        Risk::Medium,
        "sends a variable that looks like a secret over the network",
    ),
    (
        "http",
        Risk::Medium,
        "sends a variable that looks like a secret over the network",
    ),
    (
        "xh",
        Risk::Medium,
        "sends a variable that looks like a secret over the network",
    ),
    (
        "nc",
        Risk::High,
        "sends a variable that looks like a secret over the network",
    ),
    (
        "ncat",
        Risk::High,
        "sends a variable that looks like a secret over the network",
    ),
    (
        "socat",
        Risk::High,
        "sends a variable that looks like a secret over the network",
    ),
    (
        "ssh",
        Risk::High,
        "sends a variable that looks like a secret to another host",
    ),
    (
        "mail",
        Risk::High,
        "mails a variable that looks like a secret",
    ),
    (
        "sendmail",
        Risk::High,
        "mails a variable that looks like a secret",
    ),
    (
        "git",
        Risk::Medium,
        "puts a variable that looks like a secret into git",
    ),
    (
        "gh",
        Risk::Medium,
        "sends a variable that looks like a secret to GitHub",
    ),
    (
        "base64",
        Risk::High,
        "encodes a variable that looks like a secret",
    ),
    (
        "xxd",
        Risk::High,
        "encodes a variable that looks like a secret",
    ),
    (
        "export",
        Risk::Low,
        "exports a variable that looks like a secret",
    ),
];

const SQL_CLIENTS: &[&str] = &[
    "psql",
    "mysql",
    "mariadb",
    "sqlite3",
    "duckdb",
    "cockroach",
    "clickhouse-client",
    "clickhouse",
    "cqlsh",
    "sqlcmd",
];

/// Whether a program fetches from the network (its output is foreign code
/// if run).
pub(crate) fn is_remote(program: &str) -> bool {
    REMOTE.contains(&program)
}

/// Programs whose output is their input, more or less: what they pass on is
/// still what came in.
const PASSTHROUGH: &[&str] = &[
    "cat", "tee", "sed", "awk", "gawk", "tr", "head", "tail", "grep", "egrep", "sort", "uniq",
    "dos2unix", "cut", "rev", "fold", "iconv", "stdbuf", "pv", "buffer", "col", "expand",
    "unexpand", "nl", "sponge",
];

/// Producers whose output piped into a shell is code from elsewhere.
const REMOTE: &[&str] = &[
    "curl", "wget", "fetch", "http", "https", "xh", "aria2c", "nc", "ncat", "socat", "ssh", "lynx",
    "links",
];
const DECODERS: &[&str] = &[
    "base64", "base32", "xxd", "openssl", "gunzip", "zcat", "gzip", "bzip2", "bzcat", "xz",
    "xzcat", "unxz", "zstd", "rev", "tr", "uudecode", "basenc", "od", "python", "python3", "perl",
    "ruby", "node", "printf", "sed", "awk",
];

fn is_python(p: &str) -> bool {
    p.strip_prefix("python")
        .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

/// Splits `-abc` into `-a -b -c` style flags; long options stay whole.
fn short_flags(arg: &str) -> Option<&str> {
    let rest = arg.strip_prefix('-')?;
    if rest.starts_with('-') || rest.is_empty() {
        return None;
    }
    Some(rest)
}

impl Analyzer<'_> {
    pub(super) fn dispatch(
        &mut self,
        mut inv: Invocation,
        stdin: &Stdin,
        scope: &mut Scope,
        depth: usize,
    ) -> Output {
        let program = inv.program.clone();
        let p = program.as_str();
        if let Some(w) = inv.args.iter().find(|a| a.secret)
            && let Some(&(_, risk, what)) = LEAKERS.iter().find(|(n, _, _)| *n == p)
        {
            self.flag(
                "secrets.env-expansion",
                Decision::Review,
                risk,
                what,
                &format!("{p} {}", shorten(&w.text, 80)),
            );
        }

        if let Some(spec) = WRAPPERS.iter().find(|w| w.names.contains(&p)) {
            return self.wrapper(spec, inv, stdin, scope, depth);
        }
        if SHELLS.contains(&p) {
            return self.shell(inv, stdin, scope, depth);
        }
        if is_python(p) {
            inv.program = "python".into();
            return self.interpreter(inv, "python", &["-c"], stdin, scope);
        }
        if let Some((name, flags)) = INTERPRETERS.iter().find(|(n, _)| *n == p) {
            return self.interpreter(inv, name, flags, stdin, scope);
        }
        if SQL_CLIENTS.contains(&p) {
            return self.sql_client(inv, stdin, scope);
        }
        if let Some(sub) = RUNNERS.iter().find(|(n, _)| *n == p).map(|(_, s)| *s)
            && inv
                .args
                .first()
                .is_some_and(|a| sub.contains(&a.text.as_str()))
        {
            return self.tool_runner(inv, stdin, scope, depth);
        }
        match p {
            "env" => return self.env(inv, stdin, scope, depth),
            "command" => {
                if inv
                    .args
                    .first()
                    .is_some_and(|a| a.text == "-v" || a.text == "-V")
                {
                    self.push(inv);
                    return Output::From("command".into());
                }
                return self.unwrap_with(inv, 0, &[], &["-p"], stdin, scope, depth);
            }
            "exec" => {
                return self.unwrap_with(inv, 0, &["-a"], &["-c", "-l"], stdin, scope, depth);
            }
            "busybox" | "toybox" => {
                let mut inner = inv.clone();
                if inner.args.is_empty() || inner.args[0].text.starts_with('-') {
                    self.push(inv);
                    return Output::From(program);
                }
                let next = inner.args.remove(0);
                return self.rerun(inner, next, stdin, scope, depth, &program);
            }
            "xargs" => return self.xargs(inv, stdin, scope, depth),
            "find" => return self.find(inv, stdin, scope, depth),
            "watch" => return self.watch(inv, scope, depth),
            "ssh" => return self.ssh(inv, scope, depth),
            "eval" => {
                let text = join(&inv.args);
                self.flag(
                    "gate.eval",
                    Decision::Review,
                    Risk::High,
                    "eval runs a string as shell code",
                    &text,
                );
                if inv.args.iter().all(|a| !a.dynamic) {
                    let mut sub = scope.clone();
                    let via = self.via_plus(&inv, "eval");
                    self.script(&text, &mut sub, depth + 1, &via);
                }
                return Output::From("eval".into());
            }
            "source" | "." if venv_activate(&inv, self.ctx) => {
                // A virtual environment's `activate` inside the working
                // tree: a known file, judged by `shell.venv-activate`.
                self.push(inv);
                return Output::From(program);
            }
            "source" | "." => {
                match inv.args.first() {
                    Some(a) if a.text.starts_with(UNKNOWN) && a.text.contains("<(") => {
                        let producer = a
                            .text
                            .trim_start_matches(UNKNOWN)
                            .trim_start_matches("<(")
                            .trim_end_matches(')')
                            .to_string();
                        self.code_from(&producer, &program);
                    }
                    _ => self.flag(
                        "gate.source",
                        Decision::Review,
                        Risk::High,
                        "runs a script file in the current shell; the gate cannot see its content",
                        &inv.display(),
                    ),
                }
                self.push(inv);
                return Output::From(program);
            }
            "trap" => {
                if let Some(code) = inv.args.iter().find(|a| !a.text.starts_with('-')) {
                    if code.dynamic {
                        self.flag(
                            "gate.dynamic-code",
                            Decision::Review,
                            Risk::High,
                            "trap runs code the gate cannot see",
                            &code.text,
                        );
                    } else {
                        let mut sub = scope.clone();
                        let via = self.via_plus(&inv, "trap");
                        self.script(&code.text.clone(), &mut sub, depth + 1, &via);
                    }
                }
                return Output::From("trap".into());
            }
            "cd" | "pushd" | "chdir" => {
                let target = inv
                    .args
                    .iter()
                    .find(|a| !a.text.starts_with('-') || a.text == "-");
                scope.cwd = match target {
                    None => Some(self.ctx.home.clone()),
                    Some(t) if t.dynamic || t.text == "-" || t.text.starts_with('+') => None,
                    Some(t) => self.absolute(&t.text, scope.cwd.as_deref()),
                };
                self.push(inv);
                return Output::From(program);
            }
            "popd" => {
                scope.cwd = None;
                self.push(inv);
                return Output::From(program);
            }
            "export" | "declare" | "typeset" | "local" | "readonly" => {
                for a in &inv.args {
                    if let Some((name, value)) = a.text.split_once('=') {
                        let name = name.trim_end_matches('+');
                        if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                            && !name.is_empty()
                        {
                            let w = Word {
                                text: value.to_string(),
                                ..a.clone()
                            };
                            self.check_assignment(name, &w, true);
                            scope.set(name, (!a.dynamic).then(|| value.to_string()));
                        }
                    }
                }
                self.push(inv);
                return Output::From(program);
            }
            "unset" | "read" | "readarray" | "mapfile" | "getopts" => {
                for a in inv.args.iter().filter(|a| !a.text.starts_with('-')) {
                    scope.set(&a.text, None);
                }
                self.push(inv);
                return Output::From(program);
            }
            "alias" => {
                for a in &inv.args {
                    if let Some((_, body)) = a.text.split_once('=') {
                        let mut sub = scope.clone();
                        let via = self.via_plus(&inv, "alias");
                        self.script(body, &mut sub, depth + 1, &via);
                    }
                }
                self.push(inv);
                return Output::From(program);
            }
            "sed" | "gsed" => self.sed(&inv),
            "awk" | "gawk" | "mawk" | "nawk" | "busybox-awk" => self.awk(&inv),
            "mongosh" | "mongo" => self.mongo(&inv),
            "git" => self.git(&inv, scope, depth),
            _ => {}
        }
        let out = match p {
            _ if PASSTHROUGH.contains(&p) && matches!(stdin, Stdin::Unknown { .. }) => {
                match stdin {
                    Stdin::Unknown { producer } => Output::From(producer.clone()),
                    _ => Output::From(program.clone()),
                }
            }
            "echo" | "printf" if inv.args.iter().all(|a| !a.dynamic) => {
                Output::Literal(literal_output(p, &inv.args))
            }
            "cat" if inv.args.is_empty() => match stdin {
                Stdin::Literal(s) => Output::Literal(s.clone()),
                _ => Output::From("cat".into()),
            },
            _ => Output::From(program),
        };
        self.push(inv);
        out
    }

    fn via_plus(&self, inv: &Invocation, name: &str) -> Vec<String> {
        let mut v = inv.via.clone();
        v.push(name.to_string());
        v
    }

    /// Continues with `next` as the program and the rest of `inner.args`.
    fn rerun(
        &mut self,
        mut inner: Invocation,
        next: Word,
        stdin: &Stdin,
        scope: &mut Scope,
        depth: usize,
        wrapper: &str,
    ) -> Output {
        inner.via.push(wrapper.to_string());
        let raw = next.text.clone();
        let Some(program) = self.program_name(&next, &raw) else {
            return Output::From("(unknown)".into());
        };
        inner.program = program;
        self.dispatch(inner, stdin, scope, depth)
    }

    fn wrapper(
        &mut self,
        spec: &WrapperSpec,
        inv: Invocation,
        stdin: &Stdin,
        scope: &mut Scope,
        depth: usize,
    ) -> Output {
        let name = inv.program.clone();
        let args = &inv.args;
        let mut i = 0;
        let mut skip = spec.skip_positionals;
        let mut user_seen = false;
        let mut env = inv.env.clone();
        let mut options_done = false;
        while i < args.len() {
            let a = &args[i];
            let t = a.text.as_str();
            if t == "--" && !options_done {
                // sudo still reads VAR=value words after `--`.
                options_done = true;
                i += 1;
                if spec.takes_assignments {
                    continue;
                }
                break;
            }
            if options_done && !(spec.takes_assignments && t.contains('=')) {
                break;
            }
            if t == "-" && name == "su" {
                i += 1;
                continue;
            }
            if let Some((opt, value)) = t.split_once('=').filter(|(o, _)| o.starts_with("--")) {
                if spec.code_opts.contains(&opt) {
                    self.code_payload(&inv, value, a.dynamic, scope, depth, &name);
                    return Output::From(name);
                }
                i += 1;
                continue;
            }
            if t.starts_with('-')
                && t.len() > 1
                && !(name == "nice" && t[1..].bytes().all(|b| b.is_ascii_digit()))
            {
                if spec.code_opts.contains(&t) {
                    if let Some(v) = args.get(i + 1) {
                        let (text, dynamic) = (v.text.clone(), v.dynamic);
                        self.code_payload(&inv, &text, dynamic, scope, depth, &name);
                    }
                    return Output::From(name);
                }
                if spec.value_opts.contains(&t) {
                    // strace -o '|cmd' pipes the trace into a command.
                    if let Some(v) = args.get(i + 1)
                        && matches!(name.as_str(), "strace" | "ltrace")
                        && let Some(code) = v
                            .text
                            .strip_prefix('|')
                            .or_else(|| v.text.strip_prefix('!'))
                    {
                        let (code, dynamic) = (code.to_string(), v.dynamic);
                        self.code_payload(&inv, &code, dynamic, scope, depth, &name);
                    }
                    i += 2;
                    continue;
                }
                // Bundled short options: a value option inside takes the rest.
                if let Some(bundle) = short_flags(t) {
                    let mut takes_next = false;
                    let mut code_next = false;
                    for (k, c) in bundle.char_indices() {
                        let flag = format!("-{c}");
                        if spec.code_opts.contains(&flag.as_str()) {
                            code_next = k + 1 == bundle.len();
                            if !code_next {
                                let rest = bundle[k + 1..].to_string();
                                self.code_payload(&inv, &rest, a.dynamic, scope, depth, &name);
                                return Output::From(name);
                            }
                            break;
                        }
                        if spec.value_opts.contains(&flag.as_str()) {
                            takes_next = k + 1 == bundle.len();
                            break;
                        }
                    }
                    if code_next {
                        if let Some(v) = args.get(i + 1) {
                            let (text, dynamic) = (v.text.clone(), v.dynamic);
                            self.code_payload(&inv, &text, dynamic, scope, depth, &name);
                        }
                        return Output::From(name);
                    }
                    i += if takes_next { 2 } else { 1 };
                    continue;
                }
                i += 1;
                continue;
            }
            if name == "nice" && t.starts_with('-') {
                i += 1;
                continue;
            }
            if matches!(name.as_str(), "su" | "runuser") && !user_seen {
                // `su [options] [-] [user] [options]`: the user, then more options.
                user_seen = true;
                i += 1;
                continue;
            }
            if spec.takes_assignments
                && let Some((k, v)) = t.split_once('=')
                && !k.is_empty()
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                let w = Word {
                    text: v.to_string(),
                    ..a.clone()
                };
                self.check_assignment(k, &w, false);
                env.push((k.to_string(), w));
                i += 1;
                continue;
            }
            if skip > 0 {
                skip -= 1;
                i += 1;
                continue;
            }
            break;
        }
        if i >= args.len() {
            // No command: the wrapper itself is what runs.
            self.push(inv);
            return Output::From(name);
        }
        let mut inner = inv.clone();
        inner.args = args[i + 1..].to_vec();
        inner.env = env;
        self.rerun(inner, args[i].clone(), stdin, scope, depth, &name)
    }

    /// `uv run CMD`, `poetry run CMD`, `bundle exec CMD`: skip the tool's own
    /// options (and `direnv exec DIR`'s directory) and judge CMD.
    fn tool_runner(
        &mut self,
        inv: Invocation,
        stdin: &Stdin,
        scope: &mut Scope,
        depth: usize,
    ) -> Output {
        const VALUE: &[&str] = &[
            "--with",
            "--python",
            "-p",
            "--project",
            "--directory",
            "--package",
            "--env-file",
            "-n",
            "--name",
            "--prefix",
            "-e",
            "--env",
            "--group",
            "--extra",
            "--index",
            "--from",
            "--gemfile",
            "--command",
            "-c",
        ];
        // Skip the subcommand (and `direnv exec DIR`'s directory).
        let start = if inv.program == "direnv" { 2 } else { 1 };
        // The runner's own options change what runs (`uv run --with PKG`
        // installs a package first): they are judged as the runner's words.
        let end = options_end(&inv.args, start, VALUE, &[]);
        if end > start {
            let mut own = inv.clone();
            own.args.truncate(end.min(own.args.len()));
            self.push(own);
        }
        self.unwrap_with(inv, start, VALUE, &[], stdin, scope, depth)
    }

    /// Skips a wrapper's options from `start` (those in `value_opts` take a
    /// value; any other `-x` is a flag) and judges the command after them.
    #[allow(clippy::too_many_arguments)]
    fn unwrap_with(
        &mut self,
        inv: Invocation,
        start: usize,
        value_opts: &[&str],
        flags: &[&str],
        stdin: &Stdin,
        scope: &mut Scope,
        depth: usize,
    ) -> Output {
        let name = inv.program.clone();
        let i = options_end(&inv.args, start, value_opts, flags);
        if i >= inv.args.len() {
            if name != "exec" {
                self.push(inv);
            }
            return Output::From(name);
        }
        let mut inner = inv.clone();
        inner.args = inv.args[i + 1..].to_vec();
        self.rerun(inner, inv.args[i].clone(), stdin, scope, depth, &name)
    }

    /// Shell code given to a wrapper option (`flock -c`, `su -c`).
    fn code_payload(
        &mut self,
        inv: &Invocation,
        code: &str,
        dynamic: bool,
        scope: &mut Scope,
        depth: usize,
        wrapper: &str,
    ) {
        if dynamic {
            self.flag(
                "gate.dynamic-code",
                Decision::Review,
                Risk::High,
                "runs shell code the gate cannot see",
                &format!("{wrapper} {}", shorten(code, 200)),
            );
        }
        let via = self.via_plus(inv, wrapper);
        let mut sub = self.child_scope(inv, scope);
        self.script(code, &mut sub, depth + 1, &via);
    }

    /// The scope a child shell starts with: the parent's, plus the
    /// assignments placed before the command.
    fn child_scope(&self, inv: &Invocation, scope: &Scope) -> Scope {
        let mut sub = scope.clone();
        sub.cwd = inv.cwd.clone();
        for (k, v) in &inv.env {
            sub.set(k, (!v.dynamic).then(|| v.text.clone()));
        }
        sub
    }

    fn env(&mut self, inv: Invocation, stdin: &Stdin, scope: &mut Scope, depth: usize) -> Output {
        let args = &inv.args;
        let mut env = inv.env.clone();
        let mut cwd = inv.cwd.clone();
        let mut i = 0;
        let mut options_done = false;
        while i < args.len() {
            let a = &args[i];
            let t = a.text.as_str();
            if t == "--" && !options_done {
                options_done = true;
                i += 1;
                continue;
            }
            if options_done && !t.contains('=') {
                break;
            }
            if t == "-S" || t.starts_with("--split-string") || (t.starts_with("-S") && t.len() > 2)
            {
                let code = if let Some(v) = t.strip_prefix("--split-string=") {
                    Some(v.to_string())
                } else if let Some(v) = t.strip_prefix("-S").filter(|v| !v.is_empty()) {
                    Some(v.to_string())
                } else {
                    args.get(i + 1).map(|w| w.text.clone())
                };
                let rest = if t == "-S" || t == "--split-string" {
                    i + 2
                } else {
                    i + 1
                };
                let mut code = code.unwrap_or_default();
                for w in args.iter().skip(rest) {
                    code.push(' ');
                    code.push_str(&w.text);
                }
                let mut sub = self.child_scope(&inv, scope);
                let via = self.via_plus(&inv, "env");
                self.script(&code, &mut sub, depth + 1, &via);
                return Output::From("env".into());
            }
            if matches!(t, "-u" | "--unset" | "-C" | "--chdir") {
                if matches!(t, "-C" | "--chdir") {
                    cwd = args.get(i + 1).and_then(|d| {
                        (!d.dynamic)
                            .then(|| self.absolute(&d.text, cwd.as_deref()))
                            .flatten()
                    });
                }
                i += 2;
                continue;
            }
            if let Some(d) = t.strip_prefix("--chdir=") {
                cwd = (!a.dynamic)
                    .then(|| self.absolute(d, cwd.as_deref()))
                    .flatten();
                i += 1;
                continue;
            }
            if t.starts_with('-') && t.len() > 1 {
                i += 1;
                continue;
            }
            if let Some((k, v)) = t.split_once('=')
                && !k.is_empty()
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                let w = Word {
                    text: v.to_string(),
                    ..a.clone()
                };
                self.check_assignment(k, &w, false);
                env.push((k.to_string(), w));
                i += 1;
                continue;
            }
            break;
        }
        if i >= args.len() {
            self.push(inv);
            return Output::From("env".into());
        }
        let mut inner = inv.clone();
        inner.args = args[i + 1..].to_vec();
        inner.env = env;
        inner.cwd = cwd;
        self.rerun(inner, args[i].clone(), stdin, scope, depth, "env")
    }

    fn shell(&mut self, inv: Invocation, stdin: &Stdin, scope: &mut Scope, depth: usize) -> Output {
        let name = inv.program.clone();
        let args = &inv.args;
        let mut has_c = false;
        let mut read_stdin = false;
        let mut i = 0;
        while i < args.len() {
            let t = args[i].text.as_str();
            if t == "--" || t == "-" {
                i += 1;
                break;
            }
            if let Some(long) = t.strip_prefix("--") {
                if matches!(long, "rcfile" | "init-file") {
                    i += 2;
                } else {
                    i += 1;
                }
                continue;
            }
            if (t.starts_with('-') || t.starts_with('+')) && t.len() > 1 {
                let body = &t[1..];
                if body.contains('c') {
                    has_c = true;
                }
                if body.contains('s') {
                    read_stdin = true;
                }
                i += 1;
                if body.contains('o') || body.contains('O') {
                    i += 1;
                }
                continue;
            }
            break;
        }
        // `-o`/`-O` take the next word, which may be missing.
        let i = i.min(args.len());
        let via = self.via_plus(&inv, &name);
        let noexec = args[..i].iter().any(|a| {
            let t = a.text.as_str();
            t.starts_with('-') && !t.starts_with("--") && t.contains('n') && !t.contains('i')
        });
        let info = args[..i]
            .iter()
            .any(|a| a.text == "--version" || a.text == "--help");
        if noexec || info {
            // Parses or prints, runs nothing.
            return Output::From(name);
        }
        if has_c {
            let Some(code) = args.get(i) else {
                self.flag(
                    "gate.parse-error",
                    Decision::Review,
                    Risk::Medium,
                    "a shell was given -c without code",
                    &inv.display(),
                );
                return Output::From(name);
            };
            if code.dynamic {
                self.flag(
                    "gate.dynamic-code",
                    Decision::Review,
                    Risk::High,
                    "runs a shell string the gate cannot see",
                    &format!("{name} -c {}", shorten(&code.text, 200)),
                );
            }
            let mut sub = self.child_scope(&inv, scope);
            // `$0`, `$1`… are the words after the code.
            for (n, w) in args[i + 1..].iter().enumerate().take(10) {
                sub.set(&n.to_string(), (!w.dynamic).then(|| w.text.clone()));
            }
            self.script(&code.text.clone(), &mut sub, depth + 1, &via);
            return Output::From(name);
        }
        if !read_stdin && let Some(script) = args.get(i) {
            if script.text.starts_with(UNKNOWN) && script.text.contains("<(") {
                let producer = script
                    .text
                    .trim_start_matches(UNKNOWN)
                    .trim_start_matches("<(")
                    .trim_end_matches(')')
                    .to_string();
                self.code_from(&producer, &name);
            } else {
                self.flag(
                    "gate.script-file",
                    Decision::Review,
                    Risk::Medium,
                    "runs a script file; the gate cannot see its content",
                    &inv.display(),
                );
            }
            return Output::From(name);
        }
        match stdin {
            Stdin::Literal(code) => {
                let mut sub = self.child_scope(&inv, scope);
                self.script(&code.clone(), &mut sub, depth + 1, &via);
            }
            Stdin::Unknown { producer } => self.code_from(&producer.clone(), &name),
            Stdin::File(path) => self.flag(
                "gate.script-file",
                Decision::Review,
                Risk::Medium,
                "runs a script file; the gate cannot see its content",
                &format!("{name} < {path}"),
            ),
            Stdin::Inherit => self.flag(
                "gate.interactive-shell",
                Decision::Review,
                Risk::Medium,
                "starts a shell whose commands the gate cannot see",
                &inv.display(),
            ),
        }
        Output::From(name)
    }

    /// Code that reaches a shell or interpreter from another command's output.
    fn code_from(&mut self, producer: &str, consumer: &str) {
        let base = producer.split_whitespace().next().unwrap_or(producer);
        if REMOTE.contains(&base) {
            self.flag(
                "remote.pipe-to-shell",
                Decision::Deny,
                Risk::Critical,
                "runs code downloaded from the network without anyone reading it",
                &format!("{producer} | {consumer}"),
            );
        } else if DECODERS.contains(&base) {
            self.flag(
                "gate.decoded-payload",
                Decision::Review,
                Risk::High,
                "runs a decoded or transformed payload the gate cannot read",
                &format!("{producer} | {consumer}"),
            );
        } else {
            self.flag(
                "gate.dynamic-code",
                Decision::Review,
                Risk::High,
                "runs code produced by another command; the gate cannot see it",
                &format!("{producer} | {consumer}"),
            );
        }
    }

    fn interpreter(
        &mut self,
        inv: Invocation,
        name: &str,
        code_flags: &[&str],
        stdin: &Stdin,
        _scope: &mut Scope,
    ) -> Output {
        let mut code: Option<&Word> = None;
        let mut script_or_module = false;
        let mut i = 0;
        let args = &inv.args;
        while i < args.len() {
            let t = args[i].text.as_str();
            if code_flags.contains(&t) {
                code = args.get(i + 1);
                break;
            }
            if let Some((k, v)) = t.split_once('=')
                && code_flags.contains(&k)
            {
                let _ = v;
                code = Some(&args[i]);
                break;
            }
            // perl -ne / -pe / -le: bundled with e last.
            if name == "perl"
                && t.starts_with('-')
                && !t.starts_with("--")
                && (t.ends_with('e') || t.ends_with('E'))
            {
                code = args.get(i + 1);
                break;
            }
            if t == "-m" || t == "-" || !t.starts_with('-') {
                script_or_module = t != "-";
                if t.starts_with(UNKNOWN) && t.contains("<(") {
                    let producer = t
                        .trim_start_matches(UNKNOWN)
                        .trim_start_matches("<(")
                        .trim_end_matches(')')
                        .to_string();
                    self.code_from(&producer, name);
                }
                break;
            }
            i += 1;
        }
        if name == "perl" && perl_substitution(args) {
            // `perl -pi -e 's/a/b/' FILE`: a substitution of literal text,
            // judged by the rules and the toolbox like `sed -i`.
            self.push(inv);
            return Output::From(name.into());
        }
        if let Some(c) = code {
            let risky = c.dynamic || CODE_DANGER.iter().any(|d| c.text.contains(d));
            self.flag(
                "gate.inline-code",
                Decision::Review,
                if risky { Risk::High } else { Risk::Medium },
                "runs inline interpreter code; the gate does not judge code in other languages",
                &format!("{name} {}", shorten(&c.text, 200)),
            );
            // The files it is given are still judged by the path rules.
            self.push(inv);
            return Output::From(name.into());
        }
        if !script_or_module {
            match stdin {
                Stdin::Literal(text) => {
                    let risky = CODE_DANGER.iter().any(|d| text.contains(d));
                    self.flag(
                        "gate.inline-code",
                        Decision::Review,
                        if risky { Risk::High } else { Risk::Medium },
                        "runs interpreter code from standard input; the gate does not judge code in other languages",
                        &format!("{name} <<< {}", shorten(text, 200)),
                    );
                }
                Stdin::Unknown { producer } => self.code_from(&producer.clone(), name),
                Stdin::File(_) | Stdin::Inherit => {}
            }
            if !matches!(stdin, Stdin::Inherit | Stdin::File(_)) {
                return Output::From(name.into());
            }
        }
        let out = Output::From(name.into());
        self.push(inv);
        out
    }

    fn sql_client(&mut self, inv: Invocation, stdin: &Stdin, _scope: &mut Scope) -> Output {
        let name = inv.program.clone();
        let inline_flags: &[&str] = match name.as_str() {
            "psql" => &["-c", "--command"],
            "mysql" | "mariadb" => &["-e", "--execute"],
            "clickhouse-client" | "clickhouse" => &["-q", "--query"],
            "cqlsh" => &["-e", "--execute"],
            "sqlcmd" => &["-q", "-Q"],
            "duckdb" => &["-c", "-s"],
            "sqlite3" => &["-cmd"],
            "cockroach" => &["-e", "--execute"],
            _ => &[],
        };
        let file_flags: &[&str] = &["-f", "--file", "-i"];
        // Only `cockroach sql` is a SQL client; its other commands are not.
        if name == "cockroach"
            && inv
                .args
                .iter()
                .find(|a| !a.text.starts_with('-'))
                .is_none_or(|a| a.text != "sql")
        {
            self.push(inv);
            return Output::From(name);
        }
        // sqlite3 and duckdb spell options with one dash (`-csv`, `-cmd`);
        // the others bundle short options (`-Atc 'SQL'`).
        let single_dash_long = matches!(name.as_str(), "sqlite3" | "duckdb");
        let mut texts: Vec<(String, bool)> = Vec::new();
        let mut from_file = false;
        let mut positionals = Vec::new();
        let args = &inv.args;
        let mut i = 0;
        while i < args.len() {
            let a = &args[i];
            let t = a.text.as_str();
            if let Some((k, v)) = t.split_once('=')
                && (inline_flags.contains(&k) || file_flags.contains(&k))
            {
                if inline_flags.contains(&k) {
                    texts.push((v.to_string(), a.dynamic));
                } else {
                    from_file = true;
                }
                i += 1;
                continue;
            }
            if inline_flags.contains(&t) {
                if let Some(v) = args.get(i + 1) {
                    texts.push((v.text.clone(), v.dynamic));
                }
                i += 2;
                continue;
            }
            // A bundle of short options that holds the inline flag: the
            // rest of the word, or else the next word, is SQL (`-Atc 'DROP…'`,
            // `-c'DROP…'`). Letters before it are taken as flags; where one of
            // them really takes a value, the SQL read is wrong and the gate
            // holds the command as unreadable, which only makes it stricter.
            if !single_dash_long && t.starts_with('-') && !t.starts_with("--") && t.len() > 2 {
                let body = &t[1..];
                let inline = body
                    .char_indices()
                    .find(|(_, c)| inline_flags.iter().any(|f| f.len() == 2 && f.ends_with(*c)));
                let file = body
                    .chars()
                    .any(|c| file_flags.iter().any(|f| f.len() == 2 && f.ends_with(c)));
                if let Some((k, c)) = inline {
                    let rest = &body[k + c.len_utf8()..];
                    if !rest.is_empty() {
                        texts.push((rest.to_string(), a.dynamic));
                        i += 1;
                    } else {
                        if let Some(v) = args.get(i + 1) {
                            texts.push((v.text.clone(), v.dynamic));
                        }
                        i += 2;
                    }
                    from_file |= file && name != "sqlite3";
                    continue;
                }
                if file && name != "sqlite3" {
                    from_file = true;
                    i += 2;
                    continue;
                }
            }
            if name != "sqlite3" && file_flags.contains(&t) {
                from_file = true;
                i += 2;
                continue;
            }
            if !t.starts_with('-') {
                positionals.push(a.clone());
            }
            i += 1;
        }
        if name == "sqlite3" || name == "duckdb" {
            // sqlite3 DB [SQL…]
            for w in positionals.iter().skip(1) {
                texts.push((w.text.clone(), w.dynamic));
            }
        }
        if texts.is_empty() {
            match stdin {
                Stdin::Literal(s) => texts.push((s.clone(), false)),
                Stdin::Unknown { producer } => self.flag(
                    "sql.unseen",
                    Decision::Review,
                    Risk::High,
                    "feeds SQL to a database client from a source the gate cannot read",
                    &format!("{producer} | {name}"),
                ),
                Stdin::File(f) => self.flag(
                    "sql.unseen",
                    Decision::Review,
                    Risk::High,
                    "runs SQL from a file; the gate cannot see its statements",
                    &format!("{name} < {f}"),
                ),
                Stdin::Inherit if !from_file && !inv.args.iter().any(|a| matches!(a.text.as_str(), "-l" | "--list" | "-V" | "--version" | "--help" | "-?")) => self.flag(
                    "sql.interactive",
                    Decision::Review,
                    Risk::Medium,
                    "opens an interactive database session; the gate cannot see what it will run",
                    &inv.display(),
                ),
                Stdin::Inherit => {}
            }
        }
        if from_file {
            self.flag(
                "sql.unseen",
                Decision::Review,
                Risk::High,
                "runs SQL from a file; the gate cannot see its statements",
                &inv.display(),
            );
        }
        for (text, dynamic) in texts {
            if dynamic {
                self.flag(
                    "sql.unseen",
                    Decision::Review,
                    Risk::High,
                    "runs SQL the gate cannot see in full",
                    &format!("{name} {}", shorten(&text, 200)),
                );
            }
            self.sql_text(&inv, &name, &text);
        }
        self.push(inv);
        Output::From(name)
    }

    /// Turns SQL text into `sql` pseudo-invocations for the policy.
    fn sql_text(&mut self, inv: &Invocation, client: &str, text: &str) {
        let via = self.via_plus(inv, client);
        match sql::statements(client, text) {
            Ok(stmts) => {
                for s in stmts {
                    let mut args = vec![Word::lit(s.kind)];
                    if s.unbounded {
                        args.push(Word::lit("--no-where"));
                    }
                    args.extend(s.objects.into_iter().map(Word::lit));
                    self.push(Invocation {
                        program: "sql".into(),
                        args,
                        env: Vec::new(),
                        cwd: inv.cwd.clone(),
                        via: via.clone(),
                    });
                }
            }
            Err(e) => self.flag(
                "sql.unparsed",
                Decision::Review,
                Risk::High,
                "the gate could not parse this SQL; a human must read it",
                &format!("{e}: {}", shorten(text, 200)),
            ),
        }
    }

    fn mongo(&mut self, inv: &Invocation) {
        for (i, a) in inv.args.iter().enumerate() {
            let code = if a.text == "--eval" {
                inv.args.get(i + 1).map(|w| w.text.as_str())
            } else {
                a.text.strip_prefix("--eval=")
            };
            if let Some(code) = code {
                let destructive = [
                    "drop",
                    "delete",
                    "remove(",
                    "updateMany",
                    "replaceOne",
                    "update(",
                    "renameCollection",
                    "shutdownServer",
                ]
                .iter()
                .any(|k| code.contains(k));
                self.flag(
                    if destructive {
                        "sql.destructive"
                    } else {
                        "gate.inline-code"
                    },
                    Decision::Review,
                    if destructive {
                        Risk::Critical
                    } else {
                        Risk::Medium
                    },
                    if destructive {
                        "runs a destructive MongoDB operation"
                    } else {
                        "runs MongoDB shell code"
                    },
                    &format!("mongosh --eval {}", shorten(code, 200)),
                );
            }
        }
    }

    /// `git -c …` and `git --upload-pack`-style options that run commands.
    fn git(&mut self, inv: &Invocation, _scope: &mut Scope, _depth: usize) {
        for a in &inv.args {
            let t = a.text.to_ascii_lowercase();
            if t.starts_with("--upload-pack")
                || t.starts_with("--receive-pack")
                || t.starts_with("--exec=")
                || t.starts_with("--exec-path=")
                || t == "--exec"
            {
                self.flag(
                    "git.exec-option",
                    Decision::Review,
                    Risk::High,
                    "a git option that names a program to run",
                    &a.text,
                );
            }
        }
    }

    fn sed(&mut self, inv: &Invocation) {
        let mut scripts: Vec<&Word> = Vec::new();
        let mut explicit = false;
        let mut i = 0;
        while i < inv.args.len() {
            let t = inv.args[i].text.as_str();
            if t == "-e" || t == "--expression" {
                if let Some(w) = inv.args.get(i + 1) {
                    scripts.push(w);
                }
                explicit = true;
                i += 2;
                continue;
            }
            if t.starts_with("--expression=") {
                scripts.push(&inv.args[i]);
                explicit = true;
            }
            if t == "-f" || t.starts_with("--file") {
                self.flag(
                    "gate.script-file",
                    Decision::Review,
                    Risk::Medium,
                    "runs a sed script file; the gate cannot see it",
                    &inv.display(),
                );
            }
            i += 1;
        }
        if !explicit && let Some(w) = inv.args.iter().find(|a| !a.text.starts_with('-')) {
            scripts.push(w);
        }
        for s in scripts {
            if s.dynamic || sed_executes(s.text.trim_start_matches("--expression=")) {
                self.flag(
                    "gate.sed-exec",
                    Decision::Review,
                    Risk::High,
                    "the sed script runs commands or reads or writes other files",
                    &format!("sed {}", shorten(&s.text, 200)),
                );
            }
        }
    }

    fn awk(&mut self, inv: &Invocation) {
        let mut i = 0;
        let mut program: Option<&Word> = None;
        while i < inv.args.len() {
            let t = inv.args[i].text.as_str();
            if t == "-f" || t.starts_with("--file") {
                self.flag(
                    "gate.script-file",
                    Decision::Review,
                    Risk::Medium,
                    "runs an awk program file; the gate cannot see it",
                    &inv.display(),
                );
                return;
            }
            if matches!(t, "-v" | "-F" | "--assign" | "--field-separator") {
                i += 2;
                continue;
            }
            if t.starts_with('-') && t.len() > 1 {
                i += 1;
                continue;
            }
            program = Some(&inv.args[i]);
            break;
        }
        if let Some(p) = program {
            let t = &p.text;
            let runs =
                t.contains("system") || t.contains('|') || t.contains("getline") || t.contains('@');
            let writes = awk_print_redirects(t);
            if p.dynamic || runs || writes {
                self.flag(
                    "gate.awk-exec",
                    Decision::Review,
                    Risk::High,
                    "the awk program runs commands or writes files",
                    &format!("awk {}", shorten(t, 200)),
                );
            }
        }
    }

    fn xargs(&mut self, inv: Invocation, stdin: &Stdin, scope: &mut Scope, depth: usize) -> Output {
        const VALUE: &[&str] = &[
            "-a",
            "-d",
            "-E",
            "-I",
            "-L",
            "-n",
            "-P",
            "-s",
            "--arg-file",
            "--delimiter",
            "--eof",
            "--replace",
            "--max-lines",
            "--max-args",
            "--max-procs",
            "--max-chars",
            "--process-slot-var",
        ];
        let args = &inv.args;
        let mut replace: Option<String> = None;
        let mut i = 0;
        while i < args.len() {
            let t = args[i].text.as_str();
            if t == "--" {
                i += 1;
                break;
            }
            if t == "-I" || t == "--replace" {
                replace = args.get(i + 1).map(|w| w.text.clone());
                i += 2;
                continue;
            }
            if let Some(r) = t.strip_prefix("-I").filter(|r| !r.is_empty()) {
                replace = Some(r.to_string());
                i += 1;
                continue;
            }
            if t == "-i" || t.starts_with("--replace=") {
                replace = Some(t.strip_prefix("--replace=").unwrap_or("{}").to_string());
                i += 1;
                continue;
            }
            if VALUE.contains(&t) {
                i += 2;
                continue;
            }
            if t.starts_with('-') && t.len() > 1 {
                i += 1;
                continue;
            }
            break;
        }
        let producer = match stdin {
            Stdin::Literal(_) => "literal text",
            _ => "standard input",
        };
        if i >= args.len() {
            // xargs with no command runs echo.
            return Output::From("xargs".into());
        }
        let mut inner = inv.clone();
        let mut rest: Vec<Word> = args[i + 1..].to_vec();
        let items: Option<Vec<Word>> = match stdin {
            Stdin::Literal(text) => Some(text.split_whitespace().map(Word::lit).collect()),
            _ => None,
        };
        match &replace {
            Some(r) if items.as_ref().is_some_and(|i| i.len() == 1) => {
                let item = items
                    .as_ref()
                    .and_then(|i| i.first())
                    .map(|w| w.text.clone())
                    .unwrap_or_default();
                for w in rest.iter_mut() {
                    w.text = w.text.replace(r.as_str(), &item);
                }
            }
            Some(r) => {
                for w in rest.iter_mut() {
                    if w.text.contains(r.as_str()) {
                        w.text = w.text.replace(r.as_str(), &format!("{UNKNOWN}"));
                        w.dynamic = true;
                    }
                }
            }
            None => match items {
                Some(items) => rest.extend(items),
                None => rest.push(Word::unknown(producer)),
            },
        }
        inner.args = rest;
        self.rerun(
            inner,
            args[i].clone(),
            &Stdin::Unknown {
                producer: producer.into(),
            },
            scope,
            depth,
            "xargs",
        )
    }

    fn find(&mut self, inv: Invocation, stdin: &Stdin, scope: &mut Scope, depth: usize) -> Output {
        let args = &inv.args;
        let start: Vec<&Word> = args
            .iter()
            .take_while(|a| !a.text.starts_with('-') && !matches!(a.text.as_str(), "(" | "!" | ")"))
            .collect();
        let base = match start.as_slice() {
            [one] if !one.dynamic => format!("{}/{{}}", one.text.trim_end_matches('/')),
            [] => "./{}".to_string(),
            _ => format!("{UNKNOWN}{{}}"),
        };
        // With no test on names, the command runs on every file find
        // reaches: the rules see it as reached through `find-every-file`.
        const NARROWING: &[&str] = &[
            "-name",
            "-iname",
            "-path",
            "-ipath",
            "-wholename",
            "-iwholename",
            "-regex",
            "-iregex",
            "-lname",
            "-ilname",
            "-samefile",
            "-inum",
        ];
        let narrowed = args.iter().any(|a| NARROWING.contains(&a.text.as_str()));
        let wrapper = if narrowed { "find" } else { "find-every-file" };
        // `find DIR -name NAME -exec CMD {} +` runs CMD on files called NAME
        // below DIR (never through a link: find does not follow them unless
        // told to): the rules see `DIR/NAME`, so the name's own rules apply.
        let base = match (start.as_slice(), single_name(args)) {
            ([one], Some(name)) if !one.dynamic => {
                format!("{}/{name}", one.text.trim_end_matches('/'))
            }
            ([], Some(name)) => format!("./{name}"),
            _ => base,
        };
        let mut i = 0;
        let mut outer = inv.clone();
        outer.args.clear();
        while i < args.len() {
            let t = args[i].text.as_str();
            if matches!(t, "-exec" | "-execdir" | "-ok" | "-okdir") {
                let mut j = i + 1;
                let mut cmd: Vec<Word> = Vec::new();
                while j < args.len() && args[j].text != ";" && args[j].text != "+" {
                    let mut w = args[j].clone();
                    if w.text.contains("{}") {
                        w.text = w.text.replace("{}", &base);
                        w.dynamic = w.dynamic || base.starts_with(UNKNOWN);
                    }
                    cmd.push(w);
                    j += 1;
                }
                outer.args.push(args[i].clone());
                if !cmd.is_empty() {
                    let mut inner = inv.clone();
                    let first = cmd.remove(0);
                    inner.args = cmd;
                    if t.ends_with("dir") {
                        inner.cwd = None;
                    }
                    let mut sub = scope.clone();
                    self.rerun(inner, first, stdin, &mut sub, depth, wrapper);
                }
                i = j + 1;
                continue;
            }
            outer.args.push(args[i].clone());
            i += 1;
        }
        self.push(outer);
        Output::From("find".into())
    }

    fn watch(&mut self, inv: Invocation, scope: &mut Scope, depth: usize) -> Output {
        const VALUE: &[&str] = &["-n", "--interval", "-q", "--equexit"];
        let mut i = 0;
        while i < inv.args.len() {
            let t = inv.args[i].text.as_str();
            if t == "--" {
                i += 1;
                break;
            }
            if VALUE.contains(&t) {
                i += 2;
                continue;
            }
            if t.starts_with('-') && t.len() > 1 {
                i += 1;
                continue;
            }
            break;
        }
        if i >= inv.args.len() {
            self.push(inv);
            return Output::From("watch".into());
        }
        let code = join(&inv.args[i..]);
        let mut sub = scope.clone();
        let via = self.via_plus(&inv, "watch");
        self.script(&code, &mut sub, depth + 1, &via);
        Output::From("watch".into())
    }

    fn ssh(&mut self, inv: Invocation, scope: &mut Scope, depth: usize) -> Output {
        const VALUE: &[&str] = &[
            "-b", "-c", "-D", "-E", "-e", "-F", "-I", "-i", "-J", "-L", "-l", "-m", "-O", "-o",
            "-p", "-Q", "-R", "-S", "-W", "-w", "-B", "-P",
        ];
        let mut i = 0;
        let mut host_seen = false;
        while i < inv.args.len() {
            let t = inv.args[i].text.as_str();
            if VALUE.contains(&t) {
                i += 2;
                continue;
            }
            if t.starts_with('-') && t.len() > 1 {
                i += 1;
                continue;
            }
            if !host_seen {
                host_seen = true;
                i += 1;
                continue;
            }
            break;
        }
        if i < inv.args.len() {
            let code = join(&inv.args[i..]);
            let mut sub = Scope {
                cwd: None,
                vars: Vec::new(),
            };
            let via = self.via_plus(&inv, "ssh");
            self.script(&code, &mut sub, depth + 1, &via);
        }
        let _ = scope;
        self.push(inv);
        Output::From("ssh".into())
    }
}

/// What `echo` or `printf` would print, as far as a shell reading it cares.
fn literal_output(program: &str, args: &[Word]) -> String {
    if program == "printf" {
        let Some((fmt, rest)) = args.split_first() else {
            return String::new();
        };
        let fmt = fmt.text.replace("\\n", "\n").replace("\\t", "\t");
        if !fmt.contains('%') || rest.is_empty() {
            return fmt;
        }
        // Apply the format to the arguments, repeating it as printf does.
        let mut out = String::new();
        let mut it = rest.iter();
        loop {
            let mut used = false;
            let mut chars = fmt.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '%' {
                    match chars.next() {
                        Some('%') => out.push('%'),
                        Some(_) => {
                            used = true;
                            if let Some(a) = it.next() {
                                out.push_str(&a.text);
                            }
                        }
                        None => out.push('%'),
                    }
                } else {
                    out.push(c);
                }
            }
            if !used || it.len() == 0 {
                break;
            }
        }
        return out;
    }
    let mut words = args;
    let mut escapes = false;
    while let Some(first) = words.first() {
        match first.text.as_str() {
            "-n" | "-E" => words = &words[1..],
            "-e" | "-ne" | "-en" => {
                escapes = true;
                words = &words[1..];
            }
            _ => break,
        }
    }
    let text = join(words);
    if escapes {
        super::word::ansi_c(&text)
    } else {
        text
    }
}

/// Joins words with spaces, as `eval`, `watch` and `ssh` do.
fn join(words: &[Word]) -> String {
    let mut s = String::new();
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&w.text);
    }
    s
}

/// Whether an awk program redirects a `print`/`printf` into a file.
fn awk_print_redirects(program: &str) -> bool {
    let mut rest = program;
    while let Some(i) = rest.find("print") {
        let after = &rest[i + 5..];
        let end = after.find([';', '}', '\n']).unwrap_or(after.len());
        if after[..end].contains('>') {
            return true;
        }
        rest = after;
    }
    false
}

/// Whether a sed script uses a command that runs programs or touches other
/// files: `e`, `w`/`W`, `r`/`R`, or the `e`/`w` flags of `s`.
pub(crate) fn sed_executes(script: &str) -> bool {
    let b: Vec<char> = script.chars().collect();
    let mut i = 0;
    let n = b.len();
    while i < n {
        // Skip separators and addresses.
        while i < n && (b[i].is_whitespace() || b[i] == ';' || b[i] == '{' || b[i] == '}') {
            i += 1;
        }
        loop {
            if i >= n {
                return false;
            }
            let c = b[i];
            if c.is_ascii_digit() || matches!(c, '$' | ',' | '!' | '~' | '+' | ' ') {
                i += 1;
            } else if c == '/' || c == '\\' {
                let delim = if c == '\\' {
                    i += 1;
                    if i >= n {
                        return false;
                    }
                    b[i]
                } else {
                    '/'
                };
                i += 1;
                while i < n && b[i] != delim {
                    if b[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                // Address flags like I and M.
                while i < n && matches!(b[i], 'I' | 'M') {
                    i += 1;
                }
            } else {
                break;
            }
        }
        if i >= n {
            return false;
        }
        let cmd = b[i];
        i += 1;
        match cmd {
            'e' | 'w' | 'W' | 'r' | 'R' => return true,
            's' | 'y' => {
                if i >= n {
                    return false;
                }
                let delim = b[i];
                i += 1;
                for _ in 0..2 {
                    while i < n && b[i] != delim {
                        if b[i] == '\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                    i += 1;
                }
                if cmd == 's' {
                    while i < n && !matches!(b[i], ';' | '\n' | '}') {
                        if matches!(b[i], 'e' | 'w' | 'W') {
                            return true;
                        }
                        i += 1;
                    }
                }
            }
            'a' | 'i' | 'c' => {
                while i < n && b[i] != '\n' {
                    i += 1;
                }
            }
            ':' | 'b' | 't' | 'T' => {
                while i < n && !matches!(b[i], ';' | '\n') {
                    i += 1;
                }
            }
            _ => {}
        }
    }
    false
}

/// `perl -pi -e CODE FILE…` (and `-i -p -e`, `-pie`) where CODE is a
/// [`plain_substitution`] and every other word is a literal file name.
fn perl_substitution(args: &[Word]) -> bool {
    let mut code = None;
    let mut i = 0;
    let (mut p, mut inplace) = (false, false);
    while i < args.len() {
        let w = &args[i];
        if w.dynamic {
            return false;
        }
        let t = w.text.as_str();
        if let Some(letters) = t.strip_prefix('-') {
            if code.is_some()
                || letters.is_empty()
                || !letters.chars().all(|c| matches!(c, 'p' | 'i' | 'e'))
            {
                return false;
            }
            p |= letters.contains('p');
            inplace |= letters.contains('i');
            if let Some(k) = letters.find('e') {
                if k + 1 != letters.len() {
                    return false;
                }
                let Some(c) = args.get(i + 1) else {
                    return false;
                };
                if c.dynamic {
                    return false;
                }
                code = Some(c.text.as_str());
                i += 2;
                continue;
            }
            i += 1;
            continue;
        }
        if code.is_none() {
            return false;
        }
        i += 1;
    }
    p && inplace && code.is_some_and(plain_substitution) && args.len() > 2
}

/// Whether CODE is `s/A/B/FLAGS` with literal text only: no variable,
/// array or code interpolation (`$`, `@`), no escapes, no backquotes, no
/// `(?` groups (which can hold code), flags from `gimsx` only (never `e`).
pub fn plain_substitution(code: &str) -> bool {
    let mut chars = code.chars();
    if chars.next() != Some('s') {
        return false;
    }
    let Some(d) = chars.next() else {
        return false;
    };
    if !matches!(d, '/' | '|' | '#' | ',' | ':' | '!' | '%') {
        return false;
    }
    let rest: &str = chars.as_str();
    let parts: Vec<&str> = rest.split(d).collect();
    let [pattern, replacement, flags] = parts.as_slice() else {
        return false;
    };
    let literal = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || " _.,:;=+*?^()[]{}<>!%&~#'\"-/|".contains(c))
            && !s.contains("(?")
    };
    !pattern.is_empty()
        && literal(pattern)
        && literal(replacement)
        && flags.chars().all(|c| "gimsx".contains(c))
}

/// `source X/bin/activate` or `. X/bin/activate`, where X is a virtual
/// environment's usual folder name and the file is inside the working tree.
fn venv_activate(inv: &Invocation, ctx: &crate::context::Context) -> bool {
    const DIRS: &[&str] = &[".venv", "venv", "env", "virtualenv", ".virtualenv"];
    let [w] = inv.args.as_slice() else {
        return false;
    };
    if w.dynamic || w.glob || w.text.starts_with('/') {
        return false;
    }
    let rel = w.text.strip_prefix("./").unwrap_or(&w.text);
    let Some(dir) = rel.strip_suffix("/bin/activate") else {
        return false;
    };
    if !DIRS.contains(&dir) {
        return false;
    }
    let Some(wt) = ctx.worktree_of(inv.cwd.as_deref()) else {
        return false;
    };
    let abs = crate::context::normalize(&format!("{wt}/{rel}"));
    crate::context::is_within(&abs, &wt)
}

/// The one `-name` value that narrows a `find` expression, when the
/// expression has no other name test, no operator (`-o`, `!`, `,`,
/// parentheses) and does not follow links; the value is literal and names
/// one file (no `/`, no `{}`).
fn single_name(args: &[Word]) -> Option<&str> {
    const OTHER: &[&str] = &[
        "-iname",
        "-path",
        "-ipath",
        "-wholename",
        "-iwholename",
        "-regex",
        "-iregex",
        "-lname",
        "-ilname",
        "-samefile",
        "-inum",
        "-o",
        "-or",
        "!",
        "-not",
        ",",
        "(",
        ")",
        "-L",
        "-H",
        "-follow",
    ];
    let mut name = None;
    let mut i = 0;
    // Only the words before the first action: what -exec runs is not a test.
    while i < args.len() {
        let t = args[i].text.as_str();
        if matches!(t, "-exec" | "-execdir" | "-ok" | "-okdir") {
            break;
        }
        if args[i].dynamic || OTHER.contains(&t) {
            return None;
        }
        if t == "-name" {
            let v = args.get(i + 1)?;
            if name.is_some() || v.dynamic || v.text.is_empty() || v.text.contains(['/', '{', '}'])
            {
                return None;
            }
            name = Some(v.text.as_str());
            i += 2;
            continue;
        }
        i += 1;
    }
    name
}

#[cfg(test)]
mod tests {
    use super::sed_executes;

    #[test]
    fn sed_commands_that_run_or_write_are_seen() {
        assert!(sed_executes("s/a/b/e"));
        assert!(sed_executes("1e rm -rf /"));
        assert!(sed_executes("s/x/y/w /etc/passwd"));
        assert!(sed_executes("/foo/ r /home/dev/.ssh/id_rsa"));
        assert!(!sed_executes("s/hello/goodbye/g"));
        assert!(!sed_executes("s/e/w/g"));
        assert!(!sed_executes("/^#/d;s|old|new|"));
        assert!(!sed_executes("-n"));
    }
}
