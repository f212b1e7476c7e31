//! `cargo xtask size`: code size of each averaging kernel in the release
//! firmware, read from the ELF's symbol table, and the firmware's totals.

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

use crate::Result;
use crate::firmware::{self, Board};

/// The kernels the firmware example uses may take at most this much
/// `.text` together (opt-level "s").
pub(crate) const KERNEL_BUDGET: u64 = 4096;

/// One symbol's size.
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) bytes: u64,
}

/// The sizes read from one firmware ELF.
pub(crate) struct Report {
    pub(crate) kernels: Vec<Entry>,
    pub(crate) persistence: Vec<Entry>,
    pub(crate) setup: Vec<Entry>,
    pub(crate) flash: u64,
    pub(crate) ram: u64,
}

impl Report {
    pub(crate) fn kernel_total(&self) -> u64 {
        self.kernels.iter().map(|e| e.bytes).sum()
    }

    pub(crate) fn persistence_total(&self) -> u64 {
        self.persistence.iter().map(|e| e.bytes).sum()
    }

    pub(crate) fn setup_total(&self) -> u64 {
        self.setup.iter().map(|e| e.bytes).sum()
    }
}

/// Whether a symbol is a constructor: it runs once at start-up, so it is
/// set-up code, not a kernel (whether the compiler inlines it into the
/// caller or keeps it out of line is its choice).
fn is_setup(name: &str) -> bool {
    name.ends_with("::new")
}

/// Whether a symbol belongs to saving and restoring state (the codec, the
/// flash store and the flash-backed EMA's paging, the firmware's
/// checkpoint) rather than to averaging.
fn is_persistence(name: &str) -> bool {
    [
        "codec",
        "store::",
        "paged::",
        "chunk::",
        "Persist",
        "Checkpoint",
        "Crc32",
        "config_bytes",
        "to_bytes",
        // state checks only decoding calls
        "weight_valid",
        "valid_for",
    ]
    .iter()
    .any(|k| name.contains(k))
}

/// Rewrites `fixed::FixedI32<typenum …>` into the `I1F31`-style alias.
fn short_fixed_names(name: &str) -> String {
    let mut out = String::new();
    let mut rest = name;
    while let Some(pos) = rest.find("fixed::FixedI") {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos + "fixed::FixedI".len()..];
        let width: String = tail.chars().take_while(char::is_ascii_digit).collect();
        // the generic argument runs to the matching '>'
        let Some(open) = tail.find('<') else { break };
        let mut depth = 0usize;
        let mut end = None;
        for (i, c) in tail[open..].char_indices() {
            match c {
                '<' => depth += 1,
                '>' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(open + i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(end) = end else { break };
        let arg = &tail[open..end];
        let frac = arg
            .split(',')
            .filter_map(|p| {
                p.contains("bit::B1")
                    .then_some(1u32)
                    .or_else(|| p.contains("bit::B0").then_some(0))
            })
            .fold(0u32, |acc, b| acc * 2 + b);
        let width: u32 = width.parse().unwrap_or(0);
        out.push_str(&format!("I{}F{}", width.saturating_sub(frac), frac));
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Reads kernel symbols (the run's averager entry points, into which the
/// kernels are inlined, and any out-of-line `polyak` function) and the
/// flash / RAM totals.
pub(crate) fn measure(elf: &std::path::Path) -> Result<Report> {
    let data = std::fs::read(elf).map_err(|e| format!("read {}: {e}", elf.display()))?;
    let file = object::File::parse(&*data).map_err(|e| format!("parse ELF: {e}"))?;
    let mut kernels = Vec::new();
    let mut persistence = Vec::new();
    let mut setup = Vec::new();
    for sym in file.symbols() {
        if sym.kind() != SymbolKind::Text || sym.size() == 0 {
            continue;
        }
        let Ok(raw) = sym.name() else { continue };
        let name = format!("{:#}", rustc_demangle::demangle(raw));
        let ours = name.starts_with("demo::train::ops::") || name.contains("polyak::");
        if ours {
            let name = short_fixed_names(&name)
                .replace("demo::train::ops::", "")
                .replace("polyak::format::", "")
                .replace("polyak::ema::", "")
                .replace("polyak::swa::", "");
            let entry = Entry {
                name,
                bytes: sym.size(),
            };
            if is_persistence(&entry.name) {
                persistence.push(entry);
            } else if is_setup(&entry.name) {
                setup.push(entry);
            } else {
                kernels.push(entry);
            }
        }
    }
    kernels.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.name.cmp(&b.name)));
    persistence.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.name.cmp(&b.name)));
    let section = |n: &str| file.section_by_name(n).map_or(0, |s| s.size());
    let flash = section(".vector_table") + section(".text") + section(".rodata") + section(".data");
    let ram = section(".data") + section(".bss") + section(".uninit");
    Ok(Report {
        kernels,
        persistence,
        setup,
        flash,
        ram,
    })
}

pub(crate) fn print(board: Board, r: &Report) {
    println!(
        "\n{}: release firmware (opt-level \"s\", LTO)",
        board.name()
    );
    println!(
        "  flash {} B, static RAM {} B (stack not counted)",
        r.flash, r.ram
    );
    println!("  {:<52} {:>6}", "kernel (.text of the symbol)", "bytes");
    for e in &r.kernels {
        println!("  {:<52} {:>6}", e.name, e.bytes);
    }
    println!(
        "  {:<52} {:>6}  (budget {KERNEL_BUDGET})",
        "all kernels the firmware uses",
        r.kernel_total()
    );
    println!(
        "  {:<52} {:>6}  ({} symbols: codec, store, paging, checkpoint)",
        "persistence (save and restore, not a kernel)",
        r.persistence_total(),
        r.persistence.len()
    );
    println!(
        "  {:<52} {:>6}  ({} out-of-line constructors)",
        "set-up (run once, not a kernel)",
        r.setup_total(),
        r.setup.len()
    );
}

/// `cargo xtask size`.
pub(crate) fn size() -> Result {
    for board in Board::ALL {
        let elf = firmware::build(board, true)?;
        let r = measure(&elf)?;
        print(board, &r);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{is_persistence, is_setup, short_fixed_names};

    #[test]
    fn symbols_are_classified() {
        assert!(is_setup("Ema<A,S>::new"));
        assert!(!is_setup("ema_comp_update"));
        assert!(!is_setup("polyak::window::Window<A,S,W>::fold_slot"));
        assert!(is_persistence("<CompF32 as EmaShadow>::weight_valid"));
        assert!(is_persistence("polyak::codec::Decoder<R>::nested_into"));
        assert!(!is_persistence("ema_q15_read"));
    }

    #[test]
    fn fixed_names_are_shortened() {
        let long = "<fixed::FixedI32<typenum::uint::UInt<typenum::uint::UInt<typenum::uint::UInt<typenum::uint::UInt<typenum::uint::UInt<typenum::uint::UTerm,typenum::bit::B1>,typenum::bit::B1>,typenum::bit::B1>,typenum::bit::B1>,typenum::bit::B1>> as polyak::ema::EmaShadow>::step";
        assert_eq!(
            short_fixed_names(long),
            "<I1F31 as polyak::ema::EmaShadow>::step"
        );
        let q15 = "fixed::FixedI16<typenum::uint::UInt<typenum::uint::UInt<typenum::uint::UInt<typenum::uint::UInt<typenum::uint::UTerm,typenum::bit::B1>,typenum::bit::B1>,typenum::bit::B1>,typenum::bit::B1>>";
        assert_eq!(short_fixed_names(q15), "I1F15");
    }
}
