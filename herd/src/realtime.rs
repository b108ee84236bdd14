//! The heartbeat thread on a loaded host: real-time scheduling and locked
//! memory, as Corosync runs its totem thread. A heartbeat late by more
//! than `dead_after` is a failover; on a host whose CPUs are saturated by
//! ordinary processes, a SCHED_FIFO thread still runs within microseconds
//! of its timer or socket, and locked memory keeps it from waiting on a
//! page fault.

use thread_priority::{
    RealtimeThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
};

/// Makes the calling thread SCHED_FIFO at `priority` (1..=99). The
/// kernel's reason when it refuses (no CAP_SYS_NICE, a cgroup without a
/// real-time budget).
pub fn make_current_thread_realtime(priority: u8) -> Result<(), String> {
    let value =
        ThreadPriorityValue::try_from(priority).map_err(|e| format!("priority {priority}: {e}"))?;
    thread_priority::set_thread_priority_and_policy(
        thread_priority::thread_native_id(),
        ThreadPriority::Crossplatform(value),
        ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
    )
    .map_err(|e| format!("SCHED_FIFO {priority}: {e:?}"))
}

/// Locks the process's memory, now and to come.
pub fn lock_memory() -> Result<(), String> {
    use nix::sys::mman::{mlockall, MlockAllFlags};
    mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE)
        .map_err(|e| format!("mlockall: {e}"))
}
