//! A minimal CNI runtime for benchmarks: exec a plugin for ADD then DEL (one "cycle") with
//! the CNI environment and a netconf file on stdin, exactly as libcni does. The same driver
//! runs our plugins and the reference plugins, so the comparison is fair.
//!
//! usage: cni-cycle PLUGIN NETCONF [--netns PATH] [--id ID] [--fill N] [--split N]
//!   --fill N   run N ADDs with distinct container ids (pre-loading a pool), no DEL
//!   --split N  run N cycles and print the median time of ADD and of DEL, each exec'd alone
//!
//! A NETCONF holding `plugins` is a conflist, run as libcni runs one: ADD through each
//! plugin in order (CNI_PATH/<type>, the list's name and cniVersion put in, each getting
//! the previous one's result as prevResult), DEL in reverse order (no cached result).
//! PLUGIN is then only the default CNI_PATH (its directory).

use std::path::PathBuf;
use std::process::ExitCode;

use calico_tests::{Invocation, Outcome};
use serde_json::{json, Value};

/// What one verb runs: a single plugin with its netconf, or a conflist.
enum Net {
    One { plugin: PathBuf, conf: Vec<u8> },
    List { dir: PathBuf, list: Value },
}

impl Net {
    fn run(&self, inv: &Invocation) -> Outcome {
        let (dir, list) = match self {
            Net::One { plugin, conf } => return inv.run(plugin, conf),
            Net::List { dir, list } => (dir, list),
        };
        let plugins: Vec<Value> = list["plugins"].as_array().cloned().unwrap_or_default();
        let one = |p: &Value, prev: Option<&Value>| {
            let mut conf = p.clone();
            conf["name"] = list["name"].clone();
            conf["cniVersion"] = list["cniVersion"].clone();
            if let Some(prev) = prev {
                conf["prevResult"] = prev.clone();
            }
            let binary = dir.join(p["type"].as_str().unwrap_or_default());
            inv.run(&binary, &serde_json::to_vec(&conf).unwrap_or_default())
        };
        if inv.command == "DEL" {
            let mut last = None;
            for p in plugins.iter().rev() {
                let out = one(p, None);
                if !out.ok() {
                    return out;
                }
                last = Some(out);
            }
            return last.unwrap_or(Outcome { code: 0, stdout: String::new(), stderr: String::new() });
        }
        let mut prev: Option<Value> = None;
        let mut last = None;
        for p in &plugins {
            let out = one(p, prev.as_ref());
            if !out.ok() {
                return out;
            }
            prev = serde_json::from_str(&out.stdout).ok();
            last = Some(out);
        }
        last.unwrap_or(Outcome { code: 0, stdout: json!({}).to_string(), stderr: String::new() })
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: cni-cycle PLUGIN NETCONF [--netns PATH] [--id ID] [--fill N] [--split N]");
        return ExitCode::from(2);
    }
    let plugin = PathBuf::from(&args[0]);
    let conf = match std::fs::read(&args[1]) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("reading {}: {e}", args[1]);
            return ExitCode::from(2);
        }
    };
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let id = opt("--id").unwrap_or_else(|| format!("bench{}", std::process::id()));
    let path = plugin.parent().map(|p| p.display().to_string()).unwrap_or_default();
    let cni_path = std::env::var("CNI_PATH").unwrap_or(path);
    let mut net = Net::One { plugin: plugin.clone(), conf: conf.clone() };
    if let Ok(list) = serde_json::from_slice::<Value>(&conf) {
        if list.get("plugins").is_some() {
            let dir = PathBuf::from(cni_path.split(':').next().unwrap_or_default());
            net = Net::List { dir, list };
        }
    }
    let mut inv = Invocation::new("ADD", &id).path(&cni_path);
    if let Some(ns) = opt("--netns") {
        inv = inv.netns(&ns);
    }
    if let Some(n) = opt("--fill").and_then(|n| n.parse::<usize>().ok()) {
        for i in 0..n {
            let mut one = inv.clone();
            one.container_id = format!("{id}-fill{i}");
            let out = net.run(&one);
            if !out.ok() {
                eprintln!("fill ADD {i} failed: {}", out.stdout);
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    if let Some(n) = opt("--split").and_then(|n| n.parse::<usize>().ok()) {
        let mut times: [Vec<std::time::Duration>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..n {
            for (i, command) in ["ADD", "DEL"].into_iter().enumerate() {
                let start = std::time::Instant::now();
                let out = net.run(&inv.with_command(command));
                times[i].push(start.elapsed());
                if !out.ok() {
                    eprintln!("{command} failed ({}): {}{}", out.code, out.stdout, out.stderr);
                    return ExitCode::FAILURE;
                }
            }
        }
        let [mut add, mut del] = times;
        let (add, del) = (Spread::of(&mut add), Spread::of(&mut del));
        println!("ADD {:.2} ms, DEL {:.2} ms (medians of {n})", add.median, del.median);
        println!(
            "  ADD mean {:.2} p90 {:.2} max {:.2}; DEL mean {:.2} p90 {:.2} max {:.2} (ms)",
            add.mean, add.p90, add.max, del.mean, del.p90, del.max
        );
        return ExitCode::SUCCESS;
    }
    for command in ["ADD", "DEL"] {
        let out = net.run(&inv.with_command(command));
        if !out.ok() {
            eprintln!("{command} failed ({}): {}{}", out.code, out.stdout, out.stderr);
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Median, mean, 90th percentile and maximum of some timings, in milliseconds.
struct Spread {
    median: f64,
    mean: f64,
    p90: f64,
    max: f64,
}

impl Spread {
    fn of(v: &mut [std::time::Duration]) -> Spread {
        v.sort();
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let at = |q: f64| ms(v[((v.len() - 1) as f64 * q) as usize]);
        let mean = v.iter().map(|d| ms(*d)).sum::<f64>() / v.len() as f64;
        Spread { median: at(0.5), mean, p90: at(0.9), max: at(1.0) }
    }
}
