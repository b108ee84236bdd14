//! BPF objects and maps through the system libbpf: the XDP pre-filter's
//! maps (found among the process's descriptors once DPDK's af_xdp PMD has
//! loaded the program) and, in tests, loading the program and running it
//! on a frame (`BPF_PROG_TEST_RUN`).

use config::XdpMode;
use dpdk_sys as sys;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// A BPF map this process holds a descriptor of.
#[derive(Debug)]
pub struct Map {
    fd: OwnedFd,
    /// The map's key and value sizes, read once: every update is checked
    /// against them (a table publication makes thousands).
    key_size: usize,
    value_size: usize,
}

fn check(rc: i32) -> io::Result<()> {
    if rc < 0 {
        // libbpf 1.x returns -errno.
        return Err(io::Error::from_raw_os_error(-rc));
    }
    Ok(())
}

impl Map {
    /// A new `BPF_MAP_TYPE_ARRAY` of `entries` u32 values (all zero), to
    /// go into a map of maps whose template has `BPF_F_INNER_MAP` (the
    /// flag lets its inner maps differ in size; the flags must match).
    pub fn new_inner_u32_array(name: &str, entries: u32) -> io::Result<Map> {
        let name = CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
        let opts = sys::bpf_map_create_opts {
            sz: std::mem::size_of::<sys::bpf_map_create_opts>(),
            map_flags: sys::BPF_F_INNER_MAP,
            ..Default::default()
        };
        // SAFETY: `name` is a valid C string and `opts` a valid options
        // struct for the call. The returned descriptor (or -errno) is ours
        // alone.
        let fd = unsafe {
            sys::bpf_map_create(
                sys::bpf_map_type_BPF_MAP_TYPE_ARRAY,
                name.as_ptr(),
                4,
                4,
                entries,
                &opts,
            )
        };
        check(fd)?;
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Map::from_fd(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn from_fd(fd: OwnedFd) -> io::Result<Map> {
        let info = map_info(fd.as_fd())?;
        Ok(Map {
            fd,
            key_size: info.key_size as usize,
            value_size: info.value_size as usize,
        })
    }

    /// Sets `key` to `value` (their sizes must be the map's).
    pub fn update(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        if key.len() != self.key_size || value.len() != self.value_size {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        // SAFETY: key and value are readable for the map's key and value
        // sizes (checked above); the kernel copies them.
        check(unsafe {
            sys::bpf_map_update_elem(
                self.fd.as_raw_fd(),
                key.as_ptr().cast(),
                value.as_ptr().cast(),
                0,
            )
        })
    }

    /// Removes `key` (its size must be the map's); a key not there is no
    /// error.
    pub fn delete(&self, key: &[u8]) -> io::Result<()> {
        if key.len() != self.key_size {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        // SAFETY: key is readable for the map's key size (checked above);
        // the kernel copies it.
        match check(unsafe { sys::bpf_map_delete_elem(self.fd.as_raw_fd(), key.as_ptr().cast()) }) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    /// Puts map `inner`'s descriptor at `slot` of this map of maps.
    pub fn set_inner(&self, slot: u32, inner: &Map) -> io::Result<()> {
        let fd = inner.fd.as_raw_fd() as u32;
        self.update(&slot.to_ne_bytes(), &fd.to_ne_bytes())
    }

    /// The sum over CPUs of a per-CPU u64 array's entry `key`.
    pub fn percpu_u64_sum(&self, key: u32) -> io::Result<u64> {
        let cpus = libbpf_possible_cpus()?;
        let mut values = vec![0u64; cpus];
        // SAFETY: a per-CPU map's lookup writes one value (8 bytes, the
        // map's value size rounded to 8) per possible CPU: `values` has
        // room for exactly that.
        check(unsafe {
            sys::bpf_map_lookup_elem(
                self.fd.as_raw_fd(),
                (&key as *const u32).cast(),
                values.as_mut_ptr().cast(),
            )
        })?;
        Ok(values.iter().sum())
    }

    /// The map with `name` among this process's descriptors (a map DPDK's
    /// PMD created when it loaded the pre-filter), as a new descriptor.
    pub fn find_in_process(name: &str) -> io::Result<Option<Map>> {
        for entry in std::fs::read_dir("/proc/self/fd")? {
            let Some(fd) = entry?
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<RawFd>().ok())
            else {
                continue;
            };
            let is_map = std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .map(|l| l.to_string_lossy() == "anon_inode:bpf-map")
                .unwrap_or(false);
            if !is_map {
                continue;
            }
            // SAFETY: the descriptor is open (we just read its link) and
            // stays open while borrowed here: only its owner closes it.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            let Ok(info) = map_info(borrowed) else {
                continue;
            };
            if c_name(&info.name) == name {
                return Map::from_fd(borrowed.try_clone_to_owned()?).map(Some);
            }
        }
        Ok(None)
    }
}

fn map_info(fd: BorrowedFd<'_>) -> io::Result<sys::bpf_map_info> {
    let mut info = sys::bpf_map_info {
        type_: 0,
        id: 0,
        key_size: 0,
        value_size: 0,
        max_entries: 0,
        map_flags: 0,
        name: [0; 16],
        ifindex: 0,
        btf_vmlinux_value_type_id: 0,
        netns_dev: 0,
        netns_ino: 0,
        btf_id: 0,
        btf_key_type_id: 0,
        btf_value_type_id: 0,
        _bitfield_align_1: [],
        _bitfield_1: sys::bpf_map_info::new_bitfield_1(),
        map_extra: 0,
    };
    let mut len = std::mem::size_of::<sys::bpf_map_info>() as u32;
    // SAFETY: `info` is a writable bpf_map_info of `len` bytes; the kernel
    // writes at most `len` bytes and fails on a descriptor that is not a
    // BPF object.
    check(unsafe {
        sys::bpf_obj_get_info_by_fd(
            fd.as_raw_fd(),
            (&mut info as *mut sys::bpf_map_info).cast(),
            &mut len,
        )
    })?;
    Ok(info)
}

fn c_name(name: &[std::os::raw::c_char; 16]) -> String {
    name.iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8 as char)
        .collect()
}

/// The number of possible CPUs (the per-CPU maps' value count).
fn libbpf_possible_cpus() -> io::Result<usize> {
    // /sys/devices/system/cpu/possible: "0-N" or a list.
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let mut n = 0;
    for part in text.trim().split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let (lo, hi): (usize, usize) = (
            lo.parse().map_err(|_| io::ErrorKind::InvalidData)?,
            hi.parse().map_err(|_| io::ErrorKind::InvalidData)?,
        );
        n = n.max(hi + 1).max(lo + 1);
    }
    Ok(n)
}

/// A BPF object loaded into the kernel (tests: the pre-filter run on
/// frames with `BPF_PROG_TEST_RUN`).
pub struct Object {
    obj: *mut sys::bpf_object,
}

impl Object {
    /// Opens and loads the ELF object `elf`.
    pub fn load(elf: &[u8]) -> io::Result<Object> {
        // SAFETY: libbpf copies the buffer (open_mem) before returning;
        // null options are its defaults. On failure it returns null and
        // sets errno.
        let obj =
            unsafe { sys::bpf_object__open_mem(elf.as_ptr().cast(), elf.len(), std::ptr::null()) };
        if obj.is_null() {
            return Err(io::Error::last_os_error());
        }
        let object = Object { obj };
        // SAFETY: `obj` is a valid object that was opened and not loaded.
        check(unsafe { sys::bpf_object__load(object.obj) })?;
        Ok(object)
    }

    /// A new descriptor of the object's map `name`.
    pub fn map(&self, name: &str) -> io::Result<Map> {
        let c = CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: `self.obj` is a loaded object; the returned descriptor
        // stays the object's, so it is duplicated below.
        let fd = unsafe { sys::bpf_object__find_map_fd_by_name(self.obj, c.as_ptr()) };
        check(fd)?;
        // SAFETY: the object keeps `fd` open while `self` lives.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        Map::from_fd(borrowed.try_clone_to_owned()?)
    }

    /// Attaches XDP program `program` to interface `ifindex` (in this
    /// process's network namespace) in `mode` until the returned guard is
    /// dropped.
    pub fn attach_xdp(
        &self,
        program: &str,
        ifindex: u32,
        mode: XdpMode,
    ) -> io::Result<XdpAttachment> {
        // SAFETY: the object keeps the program's descriptor open while
        // `self` lives, which covers the call.
        let fd = unsafe { BorrowedFd::borrow_raw(self.program_fd(program)?) };
        xdp_attach(ifindex, fd, mode)?;
        Ok(XdpAttachment { ifindex, mode })
    }

    fn program_fd(&self, program: &str) -> io::Result<RawFd> {
        let c = CString::new(program).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: `self.obj` is a loaded object; a null program is handled.
        let prog = unsafe { sys::bpf_object__find_program_by_name(self.obj, c.as_ptr()) };
        if prog.is_null() {
            return Err(io::ErrorKind::NotFound.into());
        }
        // SAFETY: `prog` belongs to the loaded object.
        let fd = unsafe { sys::bpf_program__fd(prog) };
        check(fd)?;
        Ok(fd)
    }

    /// Attaches tc program `program` (direct action) to the egress of
    /// interface `ifindex` (in this process's network namespace), creating
    /// its `clsact` qdisc, until the returned guard is dropped.
    pub fn attach_tc_egress(&self, program: &str, ifindex: u32) -> io::Result<TcAttachment> {
        self.attach_tc(
            program,
            ifindex,
            sys::bpf_tc_attach_point_BPF_TC_EGRESS,
            None,
        )
    }

    /// The same on the interface's ingress, in the filter slot (handle,
    /// priority) `slot`, replacing whatever filter holds it: the
    /// interface outlives a process that crashed, and so does its filter.
    pub fn attach_tc_ingress(
        &self,
        program: &str,
        ifindex: u32,
        slot: (u32, u32),
    ) -> io::Result<TcAttachment> {
        self.attach_tc(
            program,
            ifindex,
            sys::bpf_tc_attach_point_BPF_TC_INGRESS,
            Some(slot),
        )
    }

    /// Makes socket program `program` the filter of socket `socket` (it
    /// replaces any filter the socket had; the socket holds the program,
    /// and the program its maps, until the socket closes).
    pub fn attach_socket_filter(
        &self,
        program: &str,
        socket: super::wake::Waker,
    ) -> io::Result<()> {
        self.attach_socket_filter_to(program, socket.fd())
    }

    /// The same on a socket of the caller's (a benchmark's packet socket).
    pub fn attach_socket_filter_on(
        &self,
        program: &str,
        socket: std::os::fd::BorrowedFd<'_>,
    ) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        self.attach_socket_filter_to(program, socket.as_raw_fd())
    }

    fn attach_socket_filter_to(&self, program: &str, socket: libc::c_int) -> io::Result<()> {
        let fd: libc::c_int = self.program_fd(program)?;
        // SAFETY: SO_ATTACH_BPF reads one int (the program's descriptor,
        // open while `self` lives) during the call; `socket` is an open
        // socket (a port's, or one the caller borrowed to us: a descriptor
        // that closed meanwhile fails).
        let rc = unsafe {
            libc::setsockopt(
                socket,
                libc::SOL_SOCKET,
                libc::SO_ATTACH_BPF,
                (&fd as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn attach_tc(
        &self,
        program: &str,
        ifindex: u32,
        point: sys::bpf_tc_attach_point,
        slot: Option<(u32, u32)>,
    ) -> io::Result<TcAttachment> {
        let fd = self.program_fd(program)?;
        let mut hook = sys::bpf_tc_hook {
            sz: TC_HOOK_SIZE,
            ifindex: ifindex as i32,
            attach_point: point,
            ..Default::default()
        };
        // SAFETY: `hook` is a valid, sized hook description read during
        // the call only.
        let rc = unsafe { sys::bpf_tc_hook_create(&mut hook) };
        // An existing clsact qdisc (another tool's filters) is shared.
        if rc != -libc::EEXIST {
            check(rc)?;
        }
        let (handle, priority) = slot.unwrap_or((0, 0));
        let mut opts = sys::bpf_tc_opts {
            sz: TC_OPTS_SIZE,
            prog_fd: fd,
            flags: if slot.is_some() { BPF_TC_F_REPLACE } else { 0 },
            handle,
            priority,
            ..Default::default()
        };
        // SAFETY: `hook` and `opts` are valid, sized structs; libbpf
        // writes the filter's handle, priority and program id into
        // `opts`.
        check(unsafe { sys::bpf_tc_attach(&hook, &mut opts) })?;
        Ok(TcAttachment {
            hook,
            handle: opts.handle,
            priority: opts.priority,
        })
    }

    /// Runs XDP program `program` once on `frame`: its return code (an
    /// `XDP_*` action) and the frame as it left the program.
    pub fn run_xdp(&self, program: &str, frame: &[u8]) -> io::Result<(u32, Vec<u8>)> {
        self.test_run(program, frame)
    }

    /// Runs tc program `program` once on `frame`: its return code (a
    /// `TC_ACT_*` action) and the frame as it left the program.
    pub fn run_tc(&self, program: &str, frame: &[u8]) -> io::Result<(u32, Vec<u8>)> {
        self.test_run(program, frame)
    }

    /// Runs socket filter `program` once on `frame`: the bytes it keeps
    /// (0: the frame is not copied to the socket).
    pub fn run_socket_filter(&self, program: &str, frame: &[u8]) -> io::Result<u32> {
        // The kernel's test run pulls an Ethernet header off before a
        // socket filter runs, where a packet socket hands it the whole
        // frame: a throwaway header in front leaves the filter `frame`.
        let mut framed = vec![0u8; 14];
        framed[12..14].copy_from_slice(&[0x08, 0x00]);
        framed.extend_from_slice(frame);
        Ok(self.test_run(program, &framed)?.0)
    }

    fn test_run(&self, program: &str, frame: &[u8]) -> io::Result<(u32, Vec<u8>)> {
        let fd = self.program_fd(program)?;
        let mut out = vec![0u8; frame.len() + 256];
        let mut opts = sys::bpf_test_run_opts {
            sz: std::mem::size_of::<sys::bpf_test_run_opts>(),
            data_in: frame.as_ptr().cast(),
            data_out: out.as_mut_ptr().cast(),
            data_size_in: frame.len() as u32,
            data_size_out: out.len() as u32,
            ctx_in: std::ptr::null(),
            ctx_out: std::ptr::null_mut(),
            ctx_size_in: 0,
            ctx_size_out: 0,
            retval: 0,
            repeat: 1,
            duration: 0,
            flags: 0,
            cpu: 0,
            batch_size: 0,
        };
        // SAFETY: data_in is readable for data_size_in bytes, data_out
        // writable for data_size_out bytes, both for the call's duration.
        check(unsafe { sys::bpf_prog_test_run_opts(fd, &mut opts) })?;
        out.truncate(opts.data_size_out as usize);
        Ok((opts.retval, out))
    }
}

// libbpf's option structs end in padding that it requires to be zero
// when `sz` covers it, and Rust leaves padding undefined: `sz` stops at
// the end of the last field instead (libbpf reads only what `sz` covers).
/// libbpf's `BPF_TC_F_REPLACE` (an enum bindgen leaves out).
const BPF_TC_F_REPLACE: u32 = 1;
const TC_HOOK_SIZE: usize = std::mem::offset_of!(sys::bpf_tc_hook, parent) + 4;
const TC_OPTS_SIZE: usize = std::mem::offset_of!(sys::bpf_tc_opts, priority) + 4;

/// A tc program attached to an interface's egress or ingress; detached when dropped
/// (the `clsact` qdisc stays: other filters may share it). If the
/// interface went first (a TAP closes with its last descriptor), its
/// filters went with it.
pub struct TcAttachment {
    hook: sys::bpf_tc_hook,
    handle: u32,
    priority: u32,
}

impl Drop for TcAttachment {
    fn drop(&mut self) {
        let opts = sys::bpf_tc_opts {
            sz: TC_OPTS_SIZE,
            handle: self.handle,
            priority: self.priority,
            ..Default::default()
        };
        // SAFETY: `hook` and `opts` are valid, sized structs read during
        // the call only; detaching names the filter by handle and
        // priority, as libbpf requires.
        let _ = unsafe { sys::bpf_tc_detach(&self.hook, &opts) };
    }
}

/// An XDP program attached to an interface; detached when dropped.
pub struct XdpAttachment {
    ifindex: u32,
    mode: XdpMode,
}

impl Drop for XdpAttachment {
    fn drop(&mut self) {
        let _ = xdp_detach(self.ifindex, self.mode);
    }
}

fn xdp_flags(mode: XdpMode) -> u32 {
    match mode {
        XdpMode::Native => sys::XDP_FLAGS_DRV_MODE,
        XdpMode::Generic => sys::XDP_FLAGS_SKB_MODE,
    }
}

/// Attaches the XDP program `prog` to interface `ifindex` in `mode`.
fn xdp_attach(ifindex: u32, prog: BorrowedFd, mode: XdpMode) -> io::Result<()> {
    // SAFETY: `prog` is an open program descriptor for the call; null
    // options are libbpf's defaults.
    check(unsafe {
        sys::bpf_xdp_attach(
            ifindex as i32,
            prog.as_raw_fd(),
            xdp_flags(mode),
            std::ptr::null(),
        )
    })
}

/// Detaches the XDP program in `mode` from interface `ifindex`.
fn xdp_detach(ifindex: u32, mode: XdpMode) -> io::Result<()> {
    // SAFETY: detaching by interface index takes no pointer but the
    // (null) options.
    check(unsafe { sys::bpf_xdp_detach(ifindex as i32, xdp_flags(mode), std::ptr::null()) })
}

/// The id of the XDP program in the driver's (native) mode on interface
/// `ifindex`, 0 if there is none.
fn native_xdp_id(ifindex: u32) -> io::Result<u32> {
    let mut id = 0u32;
    // SAFETY: `id` is a valid u32 the call writes the program's id into.
    check(unsafe {
        sys::bpf_xdp_query_id(ifindex as i32, sys::XDP_FLAGS_DRV_MODE as i32, &mut id)
    })?;
    Ok(id)
}

/// Whether an XDP program runs in the driver's (native) mode on
/// interface `ifindex` (where a driver has none, the kernel attaches in
/// generic mode).
pub fn xdp_native_attached(ifindex: u32) -> io::Result<bool> {
    Ok(native_xdp_id(ifindex)? != 0)
}

/// Moves the XDP program attached in the driver's (native) mode on
/// interface `ifindex` to generic mode: the same program, its maps and the
/// XDP sockets in them unchanged; until the returned guard is dropped.
/// (The af_xdp PMD attaches in native mode wherever the driver has one.)
/// While it moves, for a moment no program runs: frames take the kernel's
/// path. If the generic attach fails, the program goes back to native.
pub fn move_xdp_to_generic(ifindex: u32) -> io::Result<XdpAttachment> {
    let id = native_xdp_id(ifindex)?;
    if id == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no XDP program in native mode on the interface",
        ));
    }
    // SAFETY: takes an id by value; returns a new descriptor or -errno.
    let fd = unsafe { sys::bpf_prog_get_fd_by_id(id) };
    check(fd)?;
    // SAFETY: `fd` was just returned to this process and nothing else owns it.
    let prog = unsafe { OwnedFd::from_raw_fd(fd) };
    xdp_detach(ifindex, XdpMode::Native)?;
    if let Err(e) = xdp_attach(ifindex, prog.as_fd(), XdpMode::Generic) {
        // Back in the mode it was in.
        let _ = xdp_attach(ifindex, prog.as_fd(), XdpMode::Native);
        return Err(e);
    }
    Ok(XdpAttachment {
        ifindex,
        mode: XdpMode::Generic,
    })
}

impl Drop for Object {
    fn drop(&mut self) {
        // SAFETY: `obj` came from bpf_object__open_mem and is closed once.
        unsafe { sys::bpf_object__close(self.obj) }
    }
}
