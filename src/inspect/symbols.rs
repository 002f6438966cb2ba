//! Where function addresses come from: `.symtab` when the binary has one, else the Go
//! runtime's pclntab.

use super::elf::ElfLayout;
use super::pclntab::Pclntab;
use super::{InspectError, SymbolSource};

/// A way to look functions up by their full Go name (`net/http.serverHandler.ServeHTTP`).
#[derive(Debug, Clone)]
pub(crate) enum FunctionIndex {
    /// Uses [`ElfLayout::functions`].
    Symtab,
    Pclntab(Pclntab),
}

impl FunctionIndex {
    /// `.symtab` if it lists any function, otherwise the pclntab.
    pub(crate) fn build(data: &[u8], elf: &ElfLayout) -> Result<FunctionIndex, InspectError> {
        if !elf.functions.is_empty() {
            return Ok(FunctionIndex::Symtab);
        }
        Pclntab::find(data, elf).map(FunctionIndex::Pclntab)
    }

    pub(crate) fn source(&self) -> SymbolSource {
        match self {
            FunctionIndex::Symtab => SymbolSource::Symtab,
            FunctionIndex::Pclntab(_) => SymbolSource::Pclntab,
        }
    }

    /// Entry and end address. From `.symtab` the end is entry + symbol size; from the
    /// pclntab it is the next function's entry (padding included).
    pub(crate) fn find(&self, data: &[u8], elf: &ElfLayout, name: &str) -> Option<(u64, u64)> {
        match self {
            FunctionIndex::Symtab => {
                let &(addr, size) = elf.functions.get(name)?;
                Some((addr, addr.checked_add(size)?))
            }
            FunctionIndex::Pclntab(t) => t.find_function(data, elf, name),
        }
    }
}
