//! The clients' reports read: wrk's, ab's and curl's (`-w`), with the
//! checks a run's report must pass (answers, errors tolerated); and the
//! system's own texts the bench reads (`/proc/net/snmp`, `lscpu`).

use anyhow::{bail, Context, Result};

/// What a wrk run reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Wrk {
    pub(super) requests: u64,
    pub(super) rps: f64,
    pub(super) p50_us: Option<f64>,
    socket_errors: u64,
    non_2xx: u64,
}

/// wrk's report (with or without `--latency`).
pub(super) fn parse_wrk(text: &str) -> Result<Wrk> {
    let mut w = Wrk {
        requests: 0,
        rps: f64::NAN,
        p50_us: None,
        socket_errors: 0,
        non_2xx: 0,
    };
    let mut requests = None;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            w.rps = v.trim().parse().context("wrk Requests/sec")?;
        } else if line.contains(" requests in ") {
            requests = line.split_whitespace().next().and_then(|n| n.parse().ok());
        } else if let Some(v) = line.strip_prefix("50%") {
            w.p50_us = Some(duration_us(v.trim())?);
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 20497, write 0, timeout 0"
            w.socket_errors = v
                .split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            w.non_2xx = v.trim().parse().context("wrk Non-2xx")?;
        }
    }
    w.requests = requests.context("no \"N requests in\" line in wrk's output")?;
    if w.rps.is_nan() {
        bail!("no Requests/sec in wrk's output");
    }
    Ok(w)
}

/// A wrk duration ("29.00us", "2.03ms", "1.20s") in µs.
fn duration_us(s: &str) -> Result<f64> {
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else {
        bail!("unknown duration {s:?}")
    };
    let us = num
        .parse::<f64>()
        .with_context(|| format!("duration {s:?}"))?
        * scale;
    // wrk prints two decimals: keep no more than that (2.03 ms is 2030 µs).
    Ok((us * 100.0).round() / 100.0)
}

/// Errors tolerated in a client run: a few, or one in a thousand.
fn tolerated(errors: u64, requests: u64) -> bool {
    errors <= 10 + requests / 1000
}

/// A wrk run that counts: some answers, all 2xx/3xx, errors tolerated
/// (and noted).
pub(super) fn check_wrk(w: &Wrk, what: &str) -> Result<()> {
    if w.requests == 0 {
        bail!("{what}: nginx answered no request");
    }
    if w.non_2xx > 0 {
        bail!("{what}: {} answers were not 2xx/3xx", w.non_2xx);
    }
    if !tolerated(w.socket_errors, w.requests) {
        bail!(
            "{what}: {} socket errors in {} requests",
            w.socket_errors,
            w.requests
        );
    }
    if w.socket_errors > 0 {
        println!(
            "  note: {what}: {} socket errors in {} requests",
            w.socket_errors, w.requests
        );
    }
    Ok(())
}

/// What an ab run reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Ab {
    pub(super) complete: u64,
    failed: u64,
    non_2xx: u64,
    pub(super) rps: f64,
}

/// ab's report.
pub(super) fn parse_ab(text: &str) -> Result<Ab> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
    };
    Ok(Ab {
        complete: field("Complete requests:")
            .and_then(|v| v.parse().ok())
            .context("no Complete requests in ab's output")?,
        failed: field("Failed requests:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        non_2xx: field("Non-2xx responses:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        rps: field("Requests per second:")
            .and_then(|v| v.parse().ok())
            .context("no Requests per second in ab's output")?,
    })
}

/// An ab run that counts: some answers, all 2xx, failures tolerated
/// (and noted).
pub(super) fn check_ab(a: &Ab) -> Result<()> {
    if a.complete == 0 {
        bail!("ab: nginx answered no request");
    }
    if a.non_2xx > 0 {
        bail!("ab: {} answers were not 2xx", a.non_2xx);
    }
    if !tolerated(a.failed, a.complete) {
        bail!("ab: {} failed requests of {}", a.failed, a.complete);
    }
    if a.failed > 0 {
        println!("  note: ab: {} failed requests of {}", a.failed, a.complete);
    }
    Ok(())
}

/// curl's `-w '%{speed_download} %{size_download} %{http_code}'`: bytes
/// per second, bytes, HTTP status.
pub(super) fn parse_curl(text: &str) -> Result<(f64, u64, u32)> {
    let mut f = text.split_whitespace();
    let (Some(speed), Some(size), Some(code)) = (f.next(), f.next(), f.next()) else {
        bail!("curl printed {text:?}");
    };
    Ok((
        speed.parse().context("curl speed")?,
        size.parse().context("curl size")?,
        code.parse().context("curl status")?,
    ))
}

/// A field of `/proc/net/snmp` (a header line of names, then one of values).
pub(crate) fn snmp_field(snmp: &str, proto: &str, field: &str) -> Result<u64> {
    let prefix = format!("{proto}:");
    let mut lines = snmp.lines().filter(|l| l.starts_with(&prefix));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        bail!("no {proto} lines in /proc/net/snmp");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == field)
        .and_then(|(_, v)| v.parse().ok())
        .with_context(|| format!("no {proto} {field} in /proc/net/snmp"))
}

/// The "Model name" of `lscpu`'s output.
pub(super) fn model_name(lscpu: &str) -> Option<&str> {
    lscpu
        .lines()
        .find_map(|l| l.strip_prefix("Model name:"))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK_C50: &str = "Running 2s test @ http://198.18.0.100/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   657.30us  636.72us   8.75ms   93.66%
    Req/Sec    49.52k     8.62k   61.38k    55.00%
  98437 requests in 2.01s, 14.08MB read
Requests/sec:  49093.31
Transfer/sec:      7.02MB
";

    const WRK_C1_LATENCY: &str = "Running 2s test @ http://198.18.0.100/
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    40.80us  184.50us   5.47ms   99.49%
    Req/Sec    31.75k   765.04    32.19k    95.24%
  Latency Distribution
     50%   29.00us
     75%   30.00us
     90%   31.00us
     99%   52.00us
  66358 requests in 2.10s, 9.49MB read
Requests/sec:  31611.07
Transfer/sec:      4.52MB
";

    const WRK_ERRORS: &str = "Running 2s test @ http://198.18.0.11:8080/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.64ms    2.19ms  23.66ms   85.38%
    Req/Sec     2.83k     1.28k    6.26k    80.00%
  Latency Distribution
     50%    2.03ms
     75%    2.72ms
     90%    4.89ms
     99%    7.57ms
  5696 requests in 2.02s, 828.81KB read
  Socket errors: connect 0, read 20497, write 0, timeout 0
Requests/sec:   2818.81
Transfer/sec:    410.16KB
";

    const WRK_404: &str = "Running 1s test @ http://198.18.0.11/nothere
  1 threads and 5 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   268.24us  499.74us   5.14ms   94.94%
    Req/Sec    28.21k     1.26k   29.09k    90.91%
  30832 requests in 1.10s, 9.06MB read
  Non-2xx or 3xx responses: 30832
Requests/sec:  28029.52
Transfer/sec:      8.23MB
";

    const AB: &str = "This is ApacheBench, Version 2.3 <$Revision$>
Copyright 1996 Adam Twiss, Zeus Technology Ltd, http://www.zeustech.net/
Licensed to The Apache Software Foundation, http://www.apache.org/

Benchmarking 198.18.0.100 (be patient).....done


Server Software:        nginx/1.22.1
Server Hostname:        198.18.0.100
Server Port:            80

Document Path:          /
Document Length:        3 bytes

Concurrency Level:      20
Time taken for tests:   2.000 seconds
Complete requests:      15018
Failed requests:        0
Total transferred:      2180365 bytes
HTML transferred:       45111 bytes
Requests per second:    7507.72 [#/sec] (mean)
Time per request:       2.664 [ms] (mean)
Time per request:       0.133 [ms] (mean, across all concurrent requests)
Transfer rate:          1064.45 [Kbytes/sec] received

Connection Times (ms)
              min  mean[+/-sd] median   max
Connect:        0    1   1.3      1      29
Processing:     0    2   1.6      1      33
Waiting:        0    1   1.4      1      29
Total:          0    3   2.0      2      34
";

    #[test]
    fn wrk_keepalive() {
        let w = parse_wrk(WRK_C50).unwrap();
        assert_eq!(
            w,
            Wrk {
                requests: 98437,
                rps: 49093.31,
                p50_us: None,
                socket_errors: 0,
                non_2xx: 0
            }
        );
        check_wrk(&w, "t").unwrap();
    }

    #[test]
    fn wrk_latency_distribution() {
        let w = parse_wrk(WRK_C1_LATENCY).unwrap();
        assert_eq!(w.requests, 66358);
        assert_eq!(w.p50_us, Some(29.0));
        assert_eq!(w.rps, 31611.07);
    }

    #[test]
    fn wrk_errors_fail_the_run() {
        let w = parse_wrk(WRK_ERRORS).unwrap();
        assert_eq!(w.socket_errors, 20497);
        assert_eq!(w.p50_us, Some(2030.0));
        assert!(check_wrk(&w, "t").is_err());
        let w = parse_wrk(WRK_404).unwrap();
        assert_eq!(w.non_2xx, 30832);
        assert!(check_wrk(&w, "t").is_err());
        assert!(parse_wrk("unable to connect to 198.18.0.11:81 Connection refused").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration_us("29.00us").unwrap(), 29.0);
        assert_eq!(duration_us("2.03ms").unwrap(), 2030.0);
        assert_eq!(duration_us("1.50s").unwrap(), 1.5e6);
        assert!(duration_us("3m").is_err());
    }

    #[test]
    fn ab_report() {
        let a = parse_ab(AB).unwrap();
        assert_eq!(
            a,
            Ab {
                complete: 15018,
                failed: 0,
                non_2xx: 0,
                rps: 7507.72
            }
        );
        check_ab(&a).unwrap();
        let failed = AB.replace("Failed requests:        0", "Failed requests:        500");
        assert!(check_ab(&parse_ab(&failed).unwrap()).is_err());
        assert!(parse_ab("apr_socket_recv: Connection reset by peer (104)").is_err());
    }

    #[test]
    fn curl_write_out() {
        assert_eq!(
            parse_curl("501639 104857600 200").unwrap(),
            (501639.0, 104857600, 200)
        );
        assert_eq!(parse_curl("1.5e9 10 404").unwrap().2, 404);
        assert!(parse_curl("").is_err());
    }

    #[test]
    fn snmp_and_stat_files() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 2 64\nTcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors\nTcp: 1 200 120000 -1 0 12 0 0 0 0 0 3 0 7 0\n";
        assert_eq!(snmp_field(snmp, "Tcp", "PassiveOpens").unwrap(), 12);
        assert_eq!(snmp_field(snmp, "Tcp", "OutRsts").unwrap(), 7);
        assert!(snmp_field(snmp, "Udp", "InDatagrams").is_err());
        assert_eq!(
            model_name("Architecture: x86_64\nModel name:        AMD EPYC\n"),
            Some("AMD EPYC")
        );
    }
}
