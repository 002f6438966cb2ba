//! `sonde floor <pid>` (hidden): the benchmark's floor. Attaches a count-only program
//! (ebpf/floor.bpf.c) to exactly the entry and RET offsets the agent would probe in that
//! process, and prints how many times they were hit when stopped. The cost of the floor over
//! the server alone is the cost of the uprobe traps themselves, which no uprobe-based tool
//! can go under; bench/ compares sonde against it.

use std::num::NonZeroU32;

use aya::maps::PerCpuArray;
use aya::programs::uprobe::{UProbeAttachLocation, UProbeScope};
use aya::programs::UProbe;
use aya::Ebpf;
use thiserror::Error;

static FLOOR_BPF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/floor.bpf.o"));
const PROGRAM: &str = "floor_hit";
const COUNTER: &str = "floor_hits";

#[derive(Debug, Error)]
pub(crate) enum FloorError {
    #[error("pid 0 cannot be probed")]
    InvalidPid,
    #[error(transparent)]
    Inspect(#[from] crate::inspect::InspectError),
    #[error("cannot load the floor program: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("floor program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("floor counter: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("the floor object has no {0}")]
    Missing(&'static str),
}

/// The loaded floor program with its links to one process (they close when it is dropped).
pub(crate) struct Floor {
    ebpf: Ebpf,
    uprobes: usize,
}

impl Floor {
    /// Attaches the counter to every entry and RET of the process's probe plan.
    pub(crate) fn attach(pid: u32) -> Result<Floor, FloorError> {
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).ok_or(FloorError::InvalidPid)?);
        let target = crate::discover::proc::exe_path(pid);
        let plan = crate::inspect::inspect(&target)?;
        crate::kernel::raise_memlock();
        let mut ebpf = Ebpf::load(FLOOR_BPF)?;
        let program: &mut UProbe = ebpf
            .program_mut(PROGRAM)
            .ok_or(FloorError::Missing(PROGRAM))?
            .try_into()?;
        program.load()?;
        let mut uprobes = 0;
        // What sonde attaches in metrics-only mode: the goroutine-start probe is for traces.
        let probes = plan
            .probes
            .iter()
            .filter(|p| p.role != crate::inspect::ProbeRole::GoroutineStart);
        for probe in probes {
            for &offset in probe.ret_offsets.iter().chain([&probe.entry_offset]) {
                program.attach(UProbeAttachLocation::AbsoluteOffset(offset), &target, scope)?;
                uprobes += 1;
            }
        }
        Ok(Floor { ebpf, uprobes })
    }

    pub(crate) fn uprobes(&self) -> usize {
        self.uprobes
    }

    /// Hits so far, summed over CPUs.
    pub(crate) fn hits(&self) -> Result<u64, FloorError> {
        let map = self.ebpf.map(COUNTER).ok_or(FloorError::Missing(COUNTER))?;
        let counter: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
        Ok(counter.get(&0, 0)?.iter().sum())
    }
}

/// Attaches, says so on standard output, waits for SIGINT or SIGTERM, prints `hits N`.
pub(crate) fn run(pid: u32) -> i32 {
    let floor = match Floor::attach(pid) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("sonde floor: pid {pid}: {e}");
            return 1;
        }
    };
    println!("attached {} uprobes to pid {pid}", floor.uprobes());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sonde floor: cannot start the runtime: {e}");
            return 1;
        }
    };
    let waited = runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok::<(), std::io::Error>(())
    });
    if let Err(e) = waited {
        eprintln!("sonde floor: {e}");
        return 1;
    }
    match floor.hits() {
        Ok(n) => {
            println!("hits {n}");
            0
        }
        Err(e) => {
            eprintln!("sonde floor: {e}");
            1
        }
    }
}
