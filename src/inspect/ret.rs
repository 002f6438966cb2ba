//! RET sites of a function body. Go code must not be probed with uretprobes (the runtime
//! moves goroutine stacks and the return-address trampoline crashes it), so every RET gets a
//! plain uprobe instead.

use iced_x86::{Decoder, DecoderOptions, Mnemonic};

/// Addresses of every RET instruction in `code`, which starts at `vaddr`.
pub(crate) fn ret_sites(code: &[u8], vaddr: u64) -> Vec<u64> {
    let mut decoder = Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE);
    let mut rets = Vec::new();
    // The decoder always consumes at least one byte, so this ends after `code.len()` steps.
    while decoder.can_decode() {
        let instr = decoder.decode();
        if instr.mnemonic() == Mnemonic::Ret {
            rets.push(instr.ip());
        }
    }
    rets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_rets_not_c3_bytes_inside_instructions() {
        // mov eax, 0xc3c3c3c3; ret; int3; add rsp, 8; ret
        let code = [
            0xb8, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3, 0xcc, 0x48, 0x83, 0xc4, 0x08, 0xc3,
        ];
        assert_eq!(ret_sites(&code, 0x1000), vec![0x1005, 0x100b]);
    }

    #[test]
    fn garbage_does_not_panic() {
        let code: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let _ = ret_sites(&code, 0);
        assert!(ret_sites(&[], 0).is_empty());
        assert!(ret_sites(&[0x0f], 0).is_empty());
    }
}
