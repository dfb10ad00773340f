//! `GET /api/system`: the operator's monitor in one answer — the process's CPU and memory, the
//! machine's GPUs (where `nvidia-smi` exists), and per camera its bitrate, fps, viewers and
//! other readers, and its model's state, counts and answer times.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::SharedState;

#[derive(Serialize)]
pub struct System {
    process: Process,
    gpu: Gpu,
    cameras: Vec<CameraLoad>,
}

#[derive(Serialize)]
struct Process {
    /// Percent of one core over the last interval (≥ 1 s) between two reads; since the start
    /// on the first.
    cpu_percent: Option<f64>,
    rss_bytes: i64,
    threads: Option<u64>,
    uptime_s: Option<f64>,
    cores: usize,
}

#[derive(Serialize, Clone)]
struct Gpu {
    /// Whether a GPU was found (through `nvidia-smi`).
    available: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    devices: Vec<GpuDevice>,
}

#[derive(Serialize, Clone)]
struct GpuDevice {
    name: String,
    utilization_percent: Option<f64>,
    memory_used_mib: Option<f64>,
    memory_total_mib: Option<f64>,
}

#[derive(Serialize)]
struct CameraLoad {
    id: String,
    state: crate::hub::StateName,
    fps: f64,
    bitrate_kbps: f64,
    viewers: usize,
    subscribers: std::collections::BTreeMap<&'static str, usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<crate::analysis::VlmStatus>,
}

pub async fn system(State(state): State<SharedState>) -> Json<System> {
    let cameras = state
        .cameras
        .list()
        .iter()
        .map(|camera| {
            let view = camera.stream.view();
            CameraLoad {
                id: camera.id().to_string(),
                state: view.state.name(),
                fps: view.stats.fps,
                bitrate_kbps: view.stats.bitrate_kbps,
                viewers: view.viewers,
                subscribers: view.subscribers,
                model: camera.analysis_status().and_then(|s| s.vlm),
            }
        })
        .collect();
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    let stat = stat.as_deref().and_then(ProcStat::parse);
    Json(System {
        process: Process {
            cpu_percent: stat
                .as_ref()
                .and_then(|s| CPU.lock().unwrap().percent(s, Instant::now())),
            rss_bytes: crate::resources::rss_bytes(),
            threads: stat.as_ref().map(|s| s.threads),
            uptime_s: stat.as_ref().and_then(ProcStat::uptime_s),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
        gpu: gpu().await,
        cameras,
    })
}

/// What `/proc/self/stat` says of CPU time and threads.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ProcStat {
    /// User + system CPU seconds.
    cpu_s: f64,
    threads: u64,
    /// Seconds after boot at which the process started.
    started_s: f64,
}

impl ProcStat {
    fn parse(text: &str) -> Option<ProcStat> {
        // The command name (field 2) is in parentheses and may hold spaces: fields after it.
        let rest = &text[text.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // SAFETY: sysconf has no preconditions.
        let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let n = |i: usize| f.get(i)?.parse::<f64>().ok();
        // Fields 14 utime, 15 stime, 20 num_threads, 22 starttime (1-based; `rest` starts at 3).
        Some(ProcStat {
            cpu_s: (n(11)? + n(12)?) / tick,
            threads: n(17)? as u64,
            started_s: n(19)? / tick,
        })
    }

    fn uptime_s(&self) -> Option<f64> {
        let up: f64 = std::fs::read_to_string("/proc/uptime")
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(((up - self.started_s) * 10.0).round() / 10.0)
    }
}

static CPU: Mutex<CpuSampler> = Mutex::new(CpuSampler {
    last: None,
    percent: None,
});

/// CPU percent between reads at least [`CpuSampler::MIN`] apart, so that several pollers
/// don't each measure a sliver; between them the last figure stands.
#[derive(Debug)]
struct CpuSampler {
    last: Option<(Instant, f64)>,
    percent: Option<f64>,
}

impl CpuSampler {
    const MIN: Duration = Duration::from_secs(1);

    fn percent(&mut self, stat: &ProcStat, now: Instant) -> Option<f64> {
        match self.last {
            None => {
                self.last = Some((now, stat.cpu_s));
                self.percent = stat
                    .uptime_s()
                    .filter(|u| *u > 0.0)
                    .map(|u| round1(100.0 * stat.cpu_s / u));
            }
            Some((at, cpu)) if now.duration_since(at) >= Self::MIN => {
                let wall = now.duration_since(at).as_secs_f64();
                self.percent = Some(round1(100.0 * (stat.cpu_s - cpu).max(0.0) / wall));
                self.last = Some((now, stat.cpu_s));
            }
            Some(_) => {}
        }
        self.percent
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// GPUs through `nvidia-smi` (asked at most every 5 s; 2 s to answer).
async fn gpu() -> Gpu {
    static CACHE: Mutex<Option<(Instant, Gpu)>> = Mutex::new(None);
    if let Some((at, gpu)) = CACHE.lock().unwrap().as_ref() {
        if at.elapsed() < Duration::from_secs(5) {
            return gpu.clone();
        }
    }
    let (devices, reason) = match query_nvidia_smi().await {
        Ok(devices) if devices.is_empty() => (devices, Some("nvidia-smi lists no GPU".into())),
        Ok(devices) => (devices, None),
        Err(reason) => (Vec::new(), Some(reason)),
    };
    let gpu = Gpu {
        available: !devices.is_empty(),
        reason,
        devices,
    };
    *CACHE.lock().unwrap() = Some((Instant::now(), gpu.clone()));
    gpu
}

async fn query_nvidia_smi() -> Result<Vec<GpuDevice>, String> {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("nvidia-smi").is_file()));
    if !found {
        return Err("no GPU (nvidia-smi not found)".into());
    }
    let run = tokio::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,utilization.gpu,memory.used,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(2), run)
        .await
        .map_err(|_| "nvidia-smi did not answer within 2 s".to_string())?
        .map_err(|e| format!("nvidia-smi: {e}"))?;
    if !out.status.success() {
        return Err(format!("nvidia-smi failed ({})", out.status));
    }
    Ok(parse_nvidia_smi(&String::from_utf8_lossy(&out.stdout)))
}

/// `name, utilization %, memory used MiB, memory total MiB` per line.
fn parse_nvidia_smi(csv: &str) -> Vec<GpuDevice> {
    csv.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            let n = |i: usize| f.get(i).and_then(|v| v.parse().ok());
            GpuDevice {
                name: f.first().unwrap_or(&"").to_string(),
                utilization_percent: n(1),
                memory_used_mib: n(2),
                memory_total_mib: n(3),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_after_a_command_name_with_spaces() {
        let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let line =
            "4242 (live lens) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 1000 \
                    123456 789 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let s = ProcStat::parse(line).unwrap();
        assert_eq!(s.threads, 7);
        assert!((s.cpu_s - 300.0 / tick).abs() < 1e-9);
        assert!((s.started_s - 1000.0 / tick).abs() < 1e-9);
        assert_eq!(ProcStat::parse("garbage"), None);
    }

    #[test]
    fn cpu_percent_over_intervals_of_at_least_a_second() {
        let t0 = Instant::now();
        let stat = |cpu_s| ProcStat {
            cpu_s,
            threads: 1,
            started_s: 0.0,
        };
        let mut c = CpuSampler {
            last: Some((t0, 10.0)),
            percent: None,
        };
        // Half a core for 2 s.
        assert_eq!(
            c.percent(&stat(11.0), t0 + Duration::from_secs(2)),
            Some(50.0)
        );
        // 0.5 s later: too soon to measure, the last figure stands.
        assert_eq!(
            c.percent(&stat(11.5), t0 + Duration::from_millis(2500)),
            Some(50.0)
        );
        // Two cores busy for the next 1.5 s (1 s of it not yet counted above: 3 s of CPU).
        assert_eq!(
            c.percent(&stat(14.0), t0 + Duration::from_millis(3500)),
            Some(200.0)
        );
    }

    #[test]
    fn nvidia_smi_csv() {
        let d = parse_nvidia_smi("NVIDIA L4, 37, 1024, 23034\nTesla T4, [N/A], 5, 15360\n\n");
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].name, "NVIDIA L4");
        assert_eq!(
            (
                d[0].utilization_percent,
                d[0].memory_used_mib,
                d[0].memory_total_mib
            ),
            (Some(37.0), Some(1024.0), Some(23034.0))
        );
        assert_eq!(d[1].utilization_percent, None, "[N/A] is no figure");
    }
}
