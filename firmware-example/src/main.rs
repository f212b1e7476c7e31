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
    use demo::train::{Buffers, Config, Row, RunError, run};

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

    #[entry]
    fn main() -> ! {
        let Some(bufs) = cortex_m::singleton!(: Buffers<D> = Buffers::new()) else {
            defmt::println!("error: buffers already taken");
            exit(false);
        };
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
                "config seed={=u64} steps={=u32} lr={=f32} beta={=f32} noise={=f32} swa_from={=u32} switch_every={=u32}",
                seed,
                cfg.steps,
                cfg.lr,
                cfg.beta,
                cfg.noise,
                cfg.steps / 2 + 1,
                cfg.switch_every
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
                    "row seed={=u64} step={=u32} last={=f32} ema={=f32} ema_q15={=f32} swa={=f32} switch={=f32}",
                    seed,
                    r.step,
                    r.last,
                    r.ema,
                    r.ema_q15,
                    r.swa,
                    r.switch
                );
            });
            match result {
                Ok(s) => {
                    let c = s.checksums;
                    defmt::println!(
                        "sum seed={=u64} last={=u32:#010x} ema={=u32:#010x} ema_q15={=u32:#010x} ema_q15_shadow={=u32:#010x} swa={=u32:#010x} switch={=u32:#010x} q15_saturated={=u32}",
                        seed,
                        c.last,
                        c.ema,
                        c.ema_q15,
                        c.ema_q15_shadow,
                        c.swa,
                        c.switch,
                        s.q15_saturated
                    );
                    let r = s.last_row;
                    let ema_wins = r.ema < r.last;
                    all_ok &= ema_wins;
                    defmt::println!(
                        "result seed={=u64} ema_over_last={=f32} swa_over_last={=f32} ema_wins={=bool}",
                        seed,
                        r.ema / r.last,
                        r.swa / r.last,
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
