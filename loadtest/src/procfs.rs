//! Reading a process's memory, threads and CPU time from `/proc`.

use std::time::Duration;

use anyhow::{Context, Result};

/// Clock ticks per second of `/proc/PID/stat` times: `USER_HZ`, which Linux fixes at 100 for
/// user space on every architecture this project builds for (`sysconf(_SC_CLK_TCK)`).
pub const TICKS_PER_SEC: u64 = 100;

/// One look at a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Resident set size, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Threads.
    pub threads: u64,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
}

impl Sample {
    /// CPU time used between `earlier` and `self`.
    pub fn cpu_since(&self, earlier: &Sample) -> Duration {
        let ticks = self.cpu_ticks.saturating_sub(earlier.cpu_ticks);
        Duration::from_millis(ticks * 1000 / TICKS_PER_SEC)
    }
}

/// Reads `/proc/PID/status` and `/proc/PID/stat`.
pub fn sample(pid: u32) -> Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    let (rss_kib, threads) = parse_status(&status).context("unexpected /proc/PID/status")?;
    let cpu_ticks = parse_stat_cpu(&stat).context("unexpected /proc/PID/stat")?;
    Ok(Sample { rss_kib, threads, cpu_ticks })
}

/// `(VmRSS in KiB, Threads)` from the text of `/proc/PID/status`.
pub fn parse_status(text: &str) -> Option<(u64, u64)> {
    let mut rss = None;
    let mut threads = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            rss = rest.trim().strip_suffix("kB").and_then(|n| n.trim().parse().ok());
        } else if let Some(rest) = line.strip_prefix("Threads:") {
            threads = rest.trim().parse().ok();
        }
    }
    Some((rss?, threads?))
}

/// `utime + stime` (fields 14 and 15, in ticks) from the text of `/proc/PID/stat`. The command
/// name (field 2) is in parentheses and may itself contain spaces or parentheses, so the
/// fields are counted from the last `)`.
pub fn parse_stat_cpu(text: &str) -> Option<u64> {
    let after_name = &text[text.rfind(')')? + 1..];
    // After the name come field 3 (state) onwards: utime is field 14, the 12th here.
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The host's `TcpExt: ListenOverflows` counter (SYNs dropped because a listener's accept
/// queue was full). System-wide: other processes' listeners count too.
pub fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    parse_netstat(&text, "TcpExt", "ListenOverflows")
}

/// One counter from the text of `/proc/net/netstat`: lines come in pairs, `Group: names…`
/// then `Group: values…`.
pub fn parse_netstat(text: &str, group: &str, name: &str) -> Option<u64> {
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let names = names[prefix.len()..].split_whitespace();
        let mut values = values[prefix.len()..].split_whitespace();
        for field in names {
            let value = values.next()?;
            if field == name {
                return value.parse().ok();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_and_threads() {
        let text = "Name:\tportunus-server\nState:\tS (sleeping)\nVmPeak:\t  123456 kB\n\
                    VmRSS:\t   20480 kB\nRssAnon:\t 10000 kB\nThreads:\t5\nSigQ:\t0/1000\n";
        assert_eq!(parse_status(text), Some((20480, 5)));
        assert_eq!(parse_status("Name:\tx\nThreads:\t3\n"), None, "a zombie has no VmRSS");
    }

    #[test]
    fn reads_cpu_after_a_tricky_command_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime …
        let text = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 567 0 0 20 0 9 0 100 0 0\n";
        assert_eq!(parse_stat_cpu(text), Some(1234 + 567));
        assert_eq!(parse_stat_cpu("4242 (x) S 1 2"), None);
    }

    #[test]
    fn reads_a_netstat_counter() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 17 19\n\
                    IpExt: InNoRoutes ListenOverflows\nIpExt: 1 99\n";
        assert_eq!(parse_netstat(text, "TcpExt", "ListenOverflows"), Some(17));
        assert_eq!(parse_netstat(text, "TcpExt", "ListenDrops"), Some(19));
        assert_eq!(parse_netstat(text, "IpExt", "ListenOverflows"), Some(99));
        assert_eq!(parse_netstat(text, "TcpExt", "Missing"), None);
        assert_eq!(parse_netstat("TcpExt: A B\n", "TcpExt", "A"), None, "no value line");
    }

    #[test]
    fn reads_this_process() {
        let me = sample(std::process::id()).expect("own /proc entry");
        assert!(me.rss_kib > 0 && me.threads >= 1);
        let later = Sample { cpu_ticks: me.cpu_ticks + 250, ..me };
        assert_eq!(later.cpu_since(&me), Duration::from_millis(2500));
    }
}
