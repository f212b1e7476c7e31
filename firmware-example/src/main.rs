//! On-device learning under QEMU: online SGD on a simulated I2C sensor, with
//! an f32 EMA, a Q15 EMA (wide shadow), an SWA over the second half of
//! training and a Switch EMA, all in statically allocated buffers.
//!
//! Output is `defmt` over semihosting, one machine-readable line per
//! record (`row …`, `sum …`, `result …`), decoded and tabulated on the host
//! by `cargo xtask demo`. The exit status (semihosting) is 0 when every
//! check passed: no averager error, no non-finite value, and for every seed
//! the EMA's excess risk below the last iterate's.
//!
//! Boards: MPS2-AN386 (Cortex-M4F, 32 weights) and the micro:bit
//! (Cortex-M0, 16 weights).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("this is firmware: build it for thumbv7em-none-eabihf, or run `cargo xtask demo`");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod firmware {
    use cortex_m_rt::{ExceptionFrame, entry, exception};
    use cortex_m_semihosting::debug::{self, EXIT_FAILURE, EXIT_SUCCESS};
    use demo::sensor::{Sensor, SimSensor};
    use demo::train::{Buffers, Checkpoint, Config, Row, RunError, Trainer, WINDOW, run};
    use polyak::store::Store;

    /// Weights of the model.
    #[cfg(board = "microbit")]
    const D: usize = 16;
    /// Weights of the model.
    #[cfg(not(board = "microbit"))]
    const D: usize = 32;

    #[cfg(board = "microbit")]
    const BOARD: &str = "micro:bit (Cortex-M0, soft float)";
    #[cfg(not(board = "microbit"))]
    const BOARD: &str = "MPS2-AN386 (Cortex-M4F)";

    /// The seeds the run is repeated over.
    const SEEDS: [u64; 4] = [1, 2, 3, 4];

    fn exit(ok: bool) -> ! {
        debug::exit(if ok { EXIT_SUCCESS } else { EXIT_FAILURE });
        loop {
            cortex_m::asm::bkpt();
        }
    }

    /// Steps between checkpoints in persistence mode.
    const SAVE_EVERY: u32 = 1000;

    #[entry]
    fn main() -> ! {
        let Some(bufs) = cortex_m::singleton!(: Buffers<D> = Buffers::new()) else {
            defmt::println!("error: buffers already taken");
            exit(false);
        };
        // QEMU's command line is the kernel's path, then `-append`'s text
        let mut line = [0u8; 256];
        let n = hostfs::cmdline(&mut line);
        let args = line.get(..n).unwrap_or(&[]);
        if args.windows(7).any(|w| w == b"persist") {
            let stop = parse_stop(args);
            persist(bufs, stop);
        }
        #[cfg(feature = "paged")]
        if args.windows(5).any(|w| w == b"paged") {
            paged(bufs);
        }
        #[cfg(all(feature = "bench", not(board = "microbit")))]
        if args.windows(5).any(|w| w == b"bench") {
            bench::run();
        }
        defmt::println!(
            "info board={=str} weights={=usize} buffers={=usize}B seeds={=usize}",
            BOARD,
            D,
            Buffers::<D>::bytes(),
            SEEDS.len()
        );
        let mut all_ok = true;
        for seed in SEEDS {
            let cfg = Config::new(seed);
            defmt::println!(
                "config seed={=u64} steps={=u32} lr={=f32} beta={=f32} noise={=f32} swa_from={=u32} switch_every={=u32} window={=usize} window_every={=u32}",
                seed,
                cfg.steps,
                cfg.lr,
                cfg.beta,
                cfg.noise,
                cfg.steps / 2 + 1,
                cfg.switch_every,
                WINDOW,
                cfg.window_every
            );
            let sim = SimSensor::<D>::new(seed, cfg.noise);
            let w_star = *sim.w_star();
            let mut sensor = match Sensor::new(sim) {
                Ok(s) => s,
                Err(_) => {
                    defmt::println!("error seed={=u64} sensor probe failed", seed);
                    exit(false);
                }
            };
            let result = run(&cfg, &mut sensor, &w_star, bufs, |r: &Row| {
                defmt::println!(
                    "row seed={=u64} step={=u32} last={=f32} ema={=f32} ema_q15={=f32} swa={=f32} switch={=f32} window={=f32} act_mean={=f32} act_var={=f32}",
                    seed,
                    r.step,
                    r.last,
                    r.ema,
                    r.ema_q15,
                    r.swa,
                    r.switch,
                    r.window,
                    r.act_mean,
                    r.act_var
                );
            });
            match result {
                Ok(s) => {
                    let c = s.checksums;
                    defmt::println!(
                        "sum seed={=u64} last={=u32:#010x} ema={=u32:#010x} ema_q15={=u32:#010x} ema_q15_shadow={=u32:#010x} swa={=u32:#010x} switch={=u32:#010x} window={=u32:#010x} stats={=u32:#010x} q15_saturated={=u32}",
                        seed,
                        c.last,
                        c.ema,
                        c.ema_q15,
                        c.ema_q15_shadow,
                        c.swa,
                        c.switch,
                        c.window,
                        c.stats,
                        s.q15_saturated
                    );
                    let r = s.last_row;
                    let ema_wins = r.ema < r.last;
                    all_ok &= ema_wins;
                    defmt::println!(
                        "result seed={=u64} ema_over_last={=f32} swa_over_last={=f32} window_over_last={=f32} ema_wins={=bool}",
                        seed,
                        r.ema / r.last,
                        r.swa / r.last,
                        r.window / r.last,
                        ema_wins
                    );
                }
                Err(e) => {
                    all_ok = false;
                    match e {
                        RunError::Average(err) => {
                            defmt::println!("error seed={=u64} averager: {}", seed, err)
                        }
                        RunError::Sensor(_) => defmt::println!("error seed={=u64} sensor", seed),
                        RunError::NonFinite => {
                            defmt::println!("error seed={=u64} non-finite value", seed)
                        }
                    }
                }
            }
        }
        defmt::println!("done ok={=bool}", all_ok);
        exit(all_ok);
    }

    /// Benchmark mode (Cortex-M4F): instructions per element of each
    /// kernel, timed with SysTick under `-icount shift=0`.
    #[cfg(all(feature = "bench", not(board = "microbit")))]
    mod bench {
        use cortex_m::peripheral::SYST;
        use cortex_m::peripheral::syst::SystClkSource;
        use demo::bench::{BenchBuffers, Timer, kernels};

        /// SysTick at 25 MHz: one tick per 40 instructions.
        struct Ticks;

        const INSTRUCTIONS_PER_TICK: u32 = 40;

        impl Timer for Ticks {
            fn time(&mut self, f: &mut dyn FnMut() -> bool) -> Option<u32> {
                let start = SYST::get_current();
                let ok = f();
                let end = SYST::get_current();
                ok.then(|| (start.wrapping_sub(end) & 0x00FF_FFFF) * INSTRUCTIONS_PER_TICK)
            }
        }

        pub(super) fn run() -> ! {
            let Some(p) = cortex_m::Peripherals::take() else {
                super::exit(false);
            };
            let mut syst = p.SYST;
            syst.set_clock_source(SystClkSource::Core);
            syst.set_reload(0x00FF_FFFF);
            syst.clear_current();
            syst.enable_counter();
            // the assembly kernels against their safe twins, bit for bit
            match polyak::arm_selftest(0x5eed) {
                Ok(cases) => defmt::println!("selftest cases={=u32}", cases),
                Err(kernel) => {
                    defmt::println!("error selftest {=str} differs from its safe twin", kernel);
                    super::exit(false);
                }
            }
            // on the stack (4 MiB of RAM): the firmware's static RAM stays
            // what the training run needs
            let mut bufs = BenchBuffers::new();
            bufs.fill();
            let overhead = Ticks.time(&mut || true).unwrap_or(0);
            defmt::println!("bench overhead={=u32}", overhead);
            for k in kernels() {
                match (k.run)(&mut bufs, &mut Ticks) {
                    Some(instructions) => defmt::println!(
                        "bench kernel={=str} units={=u32} instructions={=u32}",
                        k.name,
                        k.units,
                        instructions
                    ),
                    None => {
                        defmt::println!("error bench {=str} refused", k.name);
                        super::exit(false);
                    }
                }
            }
            super::exit(true);
        }
    }

    /// `stop=N` in the command line, if any.
    fn parse_stop(args: &[u8]) -> Option<u32> {
        let at = args.windows(5).position(|w| w == b"stop=")?;
        let digits = args
            .get(at + 5..)?
            .iter()
            .take_while(|c| c.is_ascii_digit());
        Some(digits.fold(0u32, |v, c| {
            v.saturating_mul(10).saturating_add(u32::from(c - b'0'))
        }))
    }

    /// Persistence mode: train seed 1, committing a checkpoint to the
    /// emulated flash (and the host image file) every `SAVE_EVERY` steps;
    /// on start, resume from the newest checkpoint if there is one. With
    /// `stop=N` the run ends at step N (a power loss).
    fn persist(bufs: &'static mut Buffers<D>, stop: Option<u32>) -> ! {
        let Some(flash) =
            cortex_m::singleton!(: flash::RamFlash = flash::Emulated([0xFF; flash::SIZE]))
        else {
            exit(false);
        };
        let loaded = flash.load();
        let cfg = Config::new(1);
        let sim = SimSensor::<D>::new(cfg.seed, cfg.noise);
        let w_star = *sim.w_star();
        let Ok(mut sensor) = Sensor::new(sim) else {
            exit(false)
        };
        let Ok(mut trainer) = Trainer::new(&cfg, bufs) else {
            exit(false)
        };
        let slot = (flash::SIZE / 2) as u32;
        let restored = match Store::new(&mut *flash, 0, slot) {
            Ok(mut store) => {
                let mut ck = Checkpoint {
                    trainer: &mut trainer,
                    sensor: 0,
                };
                match store.restore(&mut ck) {
                    Ok(Some(seq)) => {
                        let pos = ck.sensor;
                        sensor.bus_mut().set_stream_state(pos);
                        Some(seq)
                    }
                    _ => None,
                }
            }
            Err(_) => exit(false),
        };
        match restored {
            Some(seq) => defmt::println!(
                "persist restored=true step={=u32} seq={=u32} image={=bool}",
                trainer.step(),
                seq,
                loaded
            ),
            None => defmt::println!("persist restored=false step=0 image={=bool}", loaded),
        }
        while !trainer.done() {
            let row = |r: &Row| {
                defmt::println!(
                    "row seed=1 step={=u32} last={=f32} ema={=f32} ema_q15={=f32} swa={=f32} switch={=f32} window={=f32} act_mean={=f32} act_var={=f32}",
                    r.step,
                    r.last,
                    r.ema,
                    r.ema_q15,
                    r.swa,
                    r.switch,
                    r.window,
                    r.act_mean,
                    r.act_var
                );
            };
            if trainer.advance(&mut sensor, &w_star, row).is_err() {
                defmt::println!("error seed=1 training failed");
                exit(false);
            }
            let step = trainer.step();
            if step.checked_rem(SAVE_EVERY) == Some(0) {
                let pos = sensor.bus().stream_state();
                let Ok(mut store) = Store::new(&mut *flash, 0, slot) else {
                    exit(false)
                };
                match store.commit(&Checkpoint {
                    trainer: &mut trainer,
                    sensor: pos,
                }) {
                    Ok(seq) => defmt::println!("persist saved step={=u32} seq={=u32}", step, seq),
                    Err(_) => {
                        defmt::println!("error persist commit failed");
                        exit(false);
                    }
                }
                if !flash.save() {
                    defmt::println!("error persist image not written");
                    exit(false);
                }
            }
            if stop == Some(step) {
                defmt::println!("persist stopped step={=u32}", step);
                exit(true);
            }
        }
        match trainer.summary::<()>() {
            Ok(s) => {
                let c = s.checksums;
                defmt::println!(
                    "sum seed=1 last={=u32:#010x} ema={=u32:#010x} ema_q15={=u32:#010x} ema_q15_shadow={=u32:#010x} swa={=u32:#010x} switch={=u32:#010x} window={=u32:#010x} stats={=u32:#010x} q15_saturated={=u32}",
                    c.last,
                    c.ema,
                    c.ema_q15,
                    c.ema_q15_shadow,
                    c.swa,
                    c.switch,
                    c.window,
                    c.stats,
                    s.q15_saturated
                );
                exit(true);
            }
            Err(_) => exit(false),
        }
    }

    /// Shadow elements per page of the flash-backed EMA (one 64-byte
    /// sector of compensated f32).
    #[cfg(feature = "paged")]
    const PAGE: usize = 8;

    /// Flash-backed mode: the run of seed 1, with a second f32 EMA of the
    /// weights whose shadow lives in emulated NOR flash (two banks of
    /// 64-byte pages and a two-slot journal), updated every step through
    /// one RAM page in a page order that changes from step to step. It must
    /// end bit-identical to the RAM EMA; prints the RAM and flash it uses.
    #[cfg(feature = "paged")]
    fn paged(bufs: &'static mut Buffers<D>) -> ! {
        use polyak::paged::FlashEma;
        use polyak::{CompF32, Ema};
        type Paged = FlashEma<
            CompF32,
            &'static mut flash::PageFlash,
            &'static mut [CompF32],
            1,
            [u8; flash::PAGE_SECTOR],
        >;
        let (Some(page), Some(pflash)) = (
            cortex_m::singleton!(: [CompF32; PAGE] = [CompF32::ZERO; PAGE]),
            cortex_m::singleton!(: flash::PageFlash = flash::Emulated([0xFF; flash::PAGE_FLASH])),
        ) else {
            exit(false)
        };
        let cfg = Config::new(1);
        let sim = SimSensor::<D>::new(cfg.seed, cfg.noise);
        let w_star = *sim.w_star();
        let Ok(mut sensor) = Sensor::new(sim) else {
            exit(false)
        };
        let Ok(mut trainer) = Trainer::new(&cfg, bufs) else {
            exit(false)
        };
        let Ok(ema) = Ema::new(&mut page[..], trainer.beta()) else {
            exit(false)
        };
        // journal: two 256-byte slots; banks after them
        let journal_slot = 256;
        let opened: Result<Paged, _> = FlashEma::open(
            ema,
            pflash,
            0,
            journal_slot,
            2 * journal_slot,
            D,
            [0u8; flash::PAGE_SECTOR],
        );
        let Ok(mut fe) = opened else {
            defmt::println!("error paged open failed");
            exit(false)
        };
        let pages = D / PAGE;
        while !trainer.done() {
            if trainer.advance(&mut sensor, &w_star, |_| {}).is_err() {
                defmt::println!("error seed=1 training failed");
                exit(false);
            }
            let step = trainer.step() as usize;
            let w = trainer.weights();
            let mut ok = fe.begin().is_ok();
            for k in 0..pages {
                // a different page order every step
                let p = if step.is_multiple_of(2) {
                    (step + k) % pages
                } else {
                    (step + pages - k) % pages
                };
                let r = p * PAGE..(p + 1) * PAGE;
                ok &= w
                    .get(r.clone())
                    .is_some_and(|x| fe.update_page(r.start, x).is_ok());
            }
            if !(ok && fe.finish().is_ok()) {
                defmt::println!("error paged step {=usize} failed", step);
                exit(false);
            }
        }
        let Ok(summary) = trainer.summary::<()>() else {
            exit(false)
        };
        let mut avg = [0.0f32; D];
        for p in 0..pages {
            let r = p * PAGE..(p + 1) * PAGE;
            let ok = avg
                .get_mut(r.clone())
                .is_some_and(|o| fe.read_page(r.start, o).is_ok());
            if !ok {
                exit(false);
            }
        }
        let sum = demo::fnv1a(avg.iter().map(|x| x.to_bits()));
        let same = sum == summary.checksums.ema && fe.verify().is_ok();
        let ram = core::mem::size_of::<Paged>() + core::mem::size_of::<[CompF32; PAGE]>();
        defmt::println!(
            "paged ema={=u32:#010x} same_as_ram={=bool} steps={=u64} weights={=usize} page={=usize}B pages={=usize} ram={=usize}B flash={=usize}B",
            sum,
            same,
            fe.steps(),
            D,
            flash::PAGE_SECTOR,
            pages,
            ram,
            flash::PAGE_FLASH
        );
        exit(same)
    }

    #[allow(unsafe_code)]
    // SAFETY: cortex-m-rt requires the HardFault handler to be an `unsafe
    // fn`; this one only reads the stacked frame it is given and exits.
    #[exception]
    unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
        defmt::println!("error hardfault pc={=u32:#010x}", frame.pc());
        exit(false);
    }

    /// Debug builds: report the panic and exit non-zero.
    #[cfg(debug_assertions)]
    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        if let Some(loc) = info.location() {
            defmt::println!("error panic at {=str}:{=u32}", loc.file(), loc.line());
        } else {
            defmt::println!("error panic");
        }
        exit(false);
    }

    /// Release builds link a panic handler that cannot be linked: any panic
    /// path left in the program is a link error, so the release firmware is
    /// proven panic-free.
    #[cfg(not(debug_assertions))]
    use panic_never as _;

    /// Files on the host through semihosting: the emulated flash image
    /// survives from one QEMU run to the next in a host file.
    mod hostfs {
        #![allow(unsafe_code)]

        use cortex_m_semihosting::{nr, syscall, syscall1};

        /// An open host file.
        pub struct File(usize);

        impl File {
            /// Opens `path` (NUL-terminated) with a semihosting mode
            /// (`nr::open::R_BINARY`, `W_TRUNC_BINARY`).
            pub fn open(path: &[u8], mode: usize) -> Option<File> {
                let len = path.len().saturating_sub(1);
                // SAFETY: OPEN reads `len` bytes at `path` (a live,
                // NUL-terminated buffer) and returns a handle or -1.
                let h = unsafe { syscall(nr::OPEN, &[path.as_ptr() as usize, mode, len]) };
                (h != usize::MAX).then_some(File(h))
            }

            /// Reads up to `buf.len()` bytes; returns how many were read.
            pub fn read(&mut self, buf: &mut [u8]) -> usize {
                // SAFETY: READ writes at most `buf.len()` bytes into `buf`,
                // which is live and exclusively borrowed; it returns the
                // count NOT read.
                let left =
                    unsafe { syscall(nr::READ, &[self.0, buf.as_mut_ptr() as usize, buf.len()]) };
                buf.len().saturating_sub(left)
            }

            /// Writes all of `buf`; returns whether the host took it.
            pub fn write(&mut self, buf: &[u8]) -> bool {
                // SAFETY: WRITE reads `buf.len()` bytes of `buf`; it returns
                // the count NOT written.
                unsafe { syscall(nr::WRITE, &[self.0, buf.as_ptr() as usize, buf.len()]) == 0 }
            }
        }

        impl Drop for File {
            fn drop(&mut self) {
                // SAFETY: CLOSE takes the handle OPEN returned.
                unsafe {
                    syscall(nr::CLOSE, &[self.0]);
                }
            }
        }

        /// The command line QEMU was given with `-append`, into `buf`;
        /// returns its length (0 if there is none).
        pub fn cmdline(buf: &mut [u8]) -> usize {
            let mut block = [buf.as_mut_ptr() as usize, buf.len()];
            // SAFETY: GET_CMDLINE writes at most block[1] bytes at block[0]
            // (`buf`, exclusively borrowed) and the length into block[1];
            // `block` outlives the call.
            let r = unsafe { syscall1(nr::GET_CMDLINE, block.as_mut_ptr() as usize) };
            if r == 0 { block[1].min(buf.len()) } else { 0 }
        }
    }

    /// A NOR flash emulated in RAM (4-byte words, 1 KiB sectors), loaded
    /// from and saved to a host file.
    mod flash {
        use embedded_storage::nor_flash::{
            ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
        };

        use super::hostfs::File;

        /// Bytes of emulated flash.
        pub const SIZE: usize = 8192;
        const IMAGE: &[u8] = b"polyak-flash.img\0";

        /// An emulated NOR flash of `N` bytes in `E`-byte sectors, in RAM.
        pub struct Emulated<const N: usize, const E: usize>(pub [u8; N]);

        /// The flash of the persistence demo (1 KiB sectors), saved to a
        /// host file between runs.
        pub type RamFlash = Emulated<SIZE, 1024>;

        /// Sector size of the flash that holds the paged EMA's shadow.
        #[cfg(feature = "paged")]
        pub const PAGE_SECTOR: usize = 64;
        /// Its size: a two-slot journal (2 × 256 B) and two banks of the
        /// shadow (2 × 4 pages of 64 B for 32 weights).
        #[cfg(feature = "paged")]
        pub const PAGE_FLASH: usize = 1024;

        /// A second emulated NOR flash with small sectors, for the paged
        /// EMA (it does not survive a restart).
        #[cfg(feature = "paged")]
        pub type PageFlash = Emulated<PAGE_FLASH, PAGE_SECTOR>;

        /// Out of bounds or misaligned.
        #[derive(Debug)]
        pub struct FlashError;

        impl NorFlashError for FlashError {
            fn kind(&self) -> NorFlashErrorKind {
                NorFlashErrorKind::OutOfBounds
            }
        }

        impl<const N: usize, const E: usize> ErrorType for Emulated<N, E> {
            type Error = FlashError;
        }

        impl<const N: usize, const E: usize> ReadNorFlash for Emulated<N, E> {
            const READ_SIZE: usize = 1;
            fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
                let start = offset as usize;
                let src = self
                    .0
                    .get(start..start.saturating_add(bytes.len()))
                    .ok_or(FlashError)?;
                for (d, s) in bytes.iter_mut().zip(src) {
                    *d = *s;
                }
                Ok(())
            }
            fn capacity(&self) -> usize {
                N
            }
        }

        impl<const N: usize, const E: usize> NorFlash for Emulated<N, E> {
            const WRITE_SIZE: usize = 4;
            const ERASE_SIZE: usize = E;
            fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
                self.0
                    .get_mut(from as usize..to as usize)
                    .ok_or(FlashError)?
                    .fill(0xFF);
                Ok(())
            }
            fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
                let start = offset as usize;
                let dst = self
                    .0
                    .get_mut(start..start.saturating_add(bytes.len()))
                    .ok_or(FlashError)?;
                for (d, s) in dst.iter_mut().zip(bytes) {
                    *d &= *s; // NOR: bits only go from 1 to 0
                }
                Ok(())
            }
        }

        impl RamFlash {
            /// Loads the image from the host file; erased flash if none.
            pub fn load(&mut self) -> bool {
                self.0.fill(0xFF);
                match File::open(IMAGE, cortex_m_semihosting::nr::open::R_BINARY) {
                    Some(mut f) => f.read(&mut self.0) == SIZE,
                    None => false,
                }
            }

            /// Saves the image to the host file.
            pub fn save(&self) -> bool {
                File::open(IMAGE, cortex_m_semihosting::nr::open::W_TRUNC_BINARY)
                    .is_some_and(|mut f| f.write(&self.0))
            }
        }
    }

    mod logger {
        //! A `defmt` global logger over semihosting stdout that cannot
        //! panic: a re-entrant or failed write is dropped, not reported.
        #![allow(unsafe_code)]

        use core::cell::RefCell;

        use cortex_m_semihosting::hio::{self, HostStream};
        use critical_section::{Mutex, RestoreState};

        struct State {
            encoder: defmt::Encoder,
            out: Option<HostStream>,
            restore: Option<RestoreState>,
        }

        static STATE: Mutex<RefCell<State>> = Mutex::new(RefCell::new(State {
            encoder: defmt::Encoder::new(),
            out: None,
            restore: None,
        }));

        fn with_state(f: impl FnOnce(&mut State)) {
            critical_section::with(|cs| {
                if let Ok(mut s) = STATE.borrow(cs).try_borrow_mut() {
                    f(&mut s);
                }
            });
        }

        fn emit(out: &mut Option<HostStream>, bytes: &[u8]) {
            if out.is_none() {
                *out = hio::hstdout().ok();
            }
            if let Some(o) = out {
                let _ = o.write_all(bytes);
            }
        }

        #[defmt::global_logger]
        struct Logger;

        // SAFETY: `acquire` enters a critical section that `release` leaves,
        // so frames are never interleaved on this single-core device; the
        // restore token is kept in the state between the two calls.
        unsafe impl defmt::Logger for Logger {
            fn acquire() {
                // SAFETY: paired with the `release` call below.
                let restore = unsafe { critical_section::acquire() };
                with_state(|s| {
                    s.restore = Some(restore);
                    let State { encoder, out, .. } = s;
                    encoder.start_frame(|b| emit(out, b));
                });
            }

            unsafe fn flush() {}

            unsafe fn release() {
                let mut restore = None;
                with_state(|s| {
                    let State { encoder, out, .. } = s;
                    encoder.end_frame(|b| emit(out, b));
                    restore = s.restore.take();
                });
                if let Some(r) = restore {
                    // SAFETY: `r` came from the matching `acquire`.
                    unsafe { critical_section::release(r) };
                }
            }

            unsafe fn write(bytes: &[u8]) {
                with_state(|s| {
                    let State { encoder, out, .. } = s;
                    encoder.write(bytes, |b| emit(out, b));
                });
            }
        }
    }
}
