//! A minimal CNI runtime for benchmarks: exec a plugin for ADD then DEL (one "cycle") with
//! the CNI environment and a netconf file on stdin, exactly as libcni does. The same driver
//! runs our plugins and the reference plugins, so the comparison is fair.
//!
//! usage: cni-cycle PLUGIN NETCONF [--netns PATH] [--id ID] [--fill N] [--split N]
//!   --fill N   run N ADDs with distinct container ids (pre-loading a pool), no DEL
//!   --split N  run N cycles and print the median time of ADD and of DEL, each exec'd alone

use std::path::PathBuf;
use std::process::ExitCode;

use calico_tests::Invocation;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!(
            "usage: cni-cycle PLUGIN NETCONF [--netns PATH] [--id ID] [--fill N] [--split N]"
        );
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
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let id = opt("--id").unwrap_or_else(|| format!("bench{}", std::process::id()));
    let path = plugin
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let cni_path = std::env::var("CNI_PATH").unwrap_or(path);
    let mut inv = Invocation::new("ADD", &id).path(&cni_path);
    if let Some(ns) = opt("--netns") {
        inv = inv.netns(&ns);
    }
    if let Some(n) = opt("--fill").and_then(|n| n.parse::<usize>().ok()) {
        for i in 0..n {
            let mut one = inv.clone();
            one.container_id = format!("{id}-fill{i}");
            let out = one.run(&plugin, &conf);
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
                let out = inv.with_command(command).run(&plugin, &conf);
                times[i].push(start.elapsed());
                if !out.ok() {
                    eprintln!(
                        "{command} failed ({}): {}{}",
                        out.code, out.stdout, out.stderr
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
        let median = |v: &mut Vec<std::time::Duration>| {
            v.sort();
            v[v.len() / 2].as_secs_f64() * 1e3
        };
        let [mut add, mut del] = times;
        println!(
            "ADD {:.2} ms, DEL {:.2} ms (medians of {n})",
            median(&mut add),
            median(&mut del)
        );
        return ExitCode::SUCCESS;
    }
    for command in ["ADD", "DEL"] {
        let out = inv.with_command(command).run(&plugin, &conf);
        if !out.ok() {
            eprintln!(
                "{command} failed ({}): {}{}",
                out.code, out.stdout, out.stderr
            );
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
