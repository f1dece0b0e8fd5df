//! What this node has: CPUs and memory from the OS, GPUs from NVML (or stand-ins), each
//! overridable as Slurm's `SlurmdParameters=config_overrides` allows.

use std::path::PathBuf;

use chorus_core::node::GpuInfo;
use tracing::warn;

/// The source of a node's GPU list. The real one asks NVML; tests use stand-ins.
pub trait GpuInventory: Send + Sync {
    fn name(&self) -> &'static str;
    fn gpus(&self) -> Vec<GpuInfo>;
    /// The device node of each GPU, by index: what the device cgroup allows or denies.
    fn devices(&self) -> Vec<(u32, PathBuf)>;
}

/// A GPU's device node as the kernel numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuDevice {
    pub index: u32,
    pub major: u64,
    pub minor: u64,
}

/// The major and minor numbers of each GPU's device node. A GPU whose node is missing or not
/// a character device cannot be isolated: the error names it.
pub fn gpu_devices(inv: &dyn GpuInventory) -> Result<Vec<GpuDevice>, String> {
    inv.devices()
        .into_iter()
        .map(|(index, path)| {
            let st = nix::sys::stat::stat(&path)
                .map_err(|e| format!("GPU {index}: {}: {e}", path.display()))?;
            if st.st_mode & libc::S_IFMT != libc::S_IFCHR {
                return Err(format!("GPU {index}: {} is not a character device", path.display()));
            }
            let (major, minor) = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
            Ok(GpuDevice { index, major: u64::from(major), minor: u64::from(minor) })
        })
        .collect()
}

/// GPUs as NVIDIA's management library reports them. Without a driver the list is empty and
/// the reason is logged once.
#[derive(Debug, Default)]
pub struct NvmlInventory;

impl GpuInventory for NvmlInventory {
    fn name(&self) -> &'static str {
        "gpu/nvml"
    }

    fn gpus(&self) -> Vec<GpuInfo> {
        match nvml_gpus() {
            Ok(g) => g,
            Err(e) => {
                warn!(error = %e, "NVML unavailable: this node offers no GPUs");
                vec![]
            }
        }
    }

    /// `/dev/nvidiaN`, N being the GPU's minor number as NVML reports it.
    fn devices(&self) -> Vec<(u32, PathBuf)> {
        let Ok(nvml) = nvml_wrapper::Nvml::init() else { return vec![] };
        let count = nvml.device_count().unwrap_or(0);
        (0..count)
            .filter_map(|i| {
                let minor = nvml.device_by_index(i).ok()?.minor_number().ok()?;
                Some((i, PathBuf::from(format!("/dev/nvidia{minor}"))))
            })
            .collect()
    }
}

fn nvml_gpus() -> Result<Vec<GpuInfo>, nvml_wrapper::error::NvmlError> {
    let nvml = nvml_wrapper::Nvml::init()?;
    let mut out = vec![];
    for i in 0..nvml.device_count()? {
        let d = nvml.device_by_index(i)?;
        out.push(GpuInfo {
            index: i,
            uuid: d.uuid()?,
            model: d.name()?,
            memory_mb: d.memory_info()?.total / (1024 * 1024),
        });
    }
    Ok(out)
}

/// `N` stand-in GPUs (`--node-gpus N`), for clusters shaped like real ones on a laptop.
/// With `devices`, GPU `i` is the character device `DIR/fakegpu<i>` (made by the operator or
/// a test with mknod), so the device cgroup can be exercised without a GPU.
#[derive(Debug, Clone)]
pub struct FakeInventory {
    pub count: u32,
    pub model: String,
    pub devices: Option<PathBuf>,
}

impl GpuInventory for FakeInventory {
    fn name(&self) -> &'static str {
        "gpu/fake"
    }

    fn gpus(&self) -> Vec<GpuInfo> {
        (0..self.count)
            .map(|i| GpuInfo {
                index: i,
                uuid: format!("GPU-fake-{i:04}"),
                model: self.model.clone(),
                memory_mb: 16 * 1024,
            })
            .collect()
    }

    fn devices(&self) -> Vec<(u32, PathBuf)> {
        let Some(dir) = &self.devices else { return vec![] };
        (0..self.count).map(|i| (i, dir.join(format!("fakegpu{i}")))).collect()
    }
}

/// CPUs the OS gives this process.
pub fn os_cpus() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)
}

/// `MemTotal` from /proc/meminfo, in MB.
pub fn os_mem_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| parse_meminfo_total_kb(&s))
        .map(|kb| kb / 1024)
        .unwrap_or(1024)
}

fn parse_meminfo_total_kb(s: &str) -> Option<u64> {
    s.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Seconds since the epoch at which this machine booted.
pub fn boot_time() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok()))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total_is_read_in_kb() {
        assert_eq!(
            parse_meminfo_total_kb("MemTotal:       24570636 kB\nMemFree: 1 kB\n"),
            Some(24_570_636)
        );
        assert_eq!(parse_meminfo_total_kb("garbage"), None);
    }

    #[test]
    fn nvml_without_a_driver_gives_no_gpus_and_does_not_panic() {
        // On machines without the NVIDIA driver this is the path taken; with one, GPUs appear.
        let gpus = NvmlInventory.gpus();
        assert!(gpus.iter().all(|g| !g.uuid.is_empty()));
    }

    #[test]
    fn stand_in_gpus_have_distinct_indices() {
        let g = FakeInventory { count: 3, model: "A100".into(), devices: None }.gpus();
        assert_eq!(g.iter().map(|g| g.index).collect::<Vec<_>>(), vec![0, 1, 2]);
    }
}
