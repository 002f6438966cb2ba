//! A parsed Go executable ([`GoBinary`]): read (size-capped, without its machine code and
//! DWARF where it can), validated (x86-64 ELF, Go 1.17 or newer, a function index), then asked
//! for functions, their RET sites, struct offsets and, from those, the probe plan.

use std::path::{Path, PathBuf};

use super::elf::ElfLayout;
use super::symbols::FunctionIndex;
use super::{
    buildinfo, dwarf, fields, grpc, offsets_table, pclntab, ret, sparse, typemeta, FunctionProbe,
    GoVersion, InspectError, OffsetsSource, ProbePlan, ProbeRole, Speaks, SymbolSource,
    H2C_HANDLER, MAX_FILE_SIZE, NEWPROC1, ROUND_TRIP, SERVE_HTTP, TLS_SERVER_HANDSHAKE,
};

/// Function bodies larger than this are not decoded (ServeHTTP is a few hundred bytes).
const MAX_FUNCTION_SIZE: u64 = 16 << 20;

/// A parsed Go executable: owns the bytes, answers function and RET lookups.
#[derive(Debug)]
pub(crate) struct GoBinary {
    pub(super) path: PathBuf,
    pub(super) data: Vec<u8>,
    /// The file, when `data` leaves out its code or DWARF (see [`sparse`]): those bytes are
    /// read from it when needed.
    left_out: Option<(std::fs::File, sparse::Skipped)>,
    /// The whole file, read on first need of DWARF when `data` left it out.
    whole: std::cell::OnceCell<Vec<u8>>,
    elf: ElfLayout,
    pub(super) build: buildinfo::BuildInfo,
    index: FunctionIndex,
    /// Located on first use, then shared by the HTTP and gRPC offset lookups.
    types: std::cell::OnceCell<Result<typemeta::TypeSection, typemeta::TypeMetaError>>,
    /// Test hook: skip the type metadata, as a binary without it would.
    #[cfg(test)]
    pub(crate) no_type_metadata: bool,
    /// Test hook: act as if the built-in table had no row for this Go version.
    #[cfg(test)]
    pub(crate) no_table_row: bool,
}

impl GoBinary {
    /// Reads and validates a Go executable (x86-64 ELF, Go ≥ 1.17, with a function index).
    pub(crate) fn open(path: &Path) -> Result<GoBinary, InspectError> {
        let file = std::fs::File::open(path).map_err(|e| InspectError::io(path, &e))?;
        let size = file
            .metadata()
            .map_err(|e| InspectError::io(path, &e))?
            .len();
        if size > MAX_FILE_SIZE {
            return Err(InspectError::TooLarge {
                path: path.display().to_string(),
                size,
                limit: MAX_FILE_SIZE,
            });
        }
        // A file that shrinks while being read fails here, one that grows is read as it was.
        let read = sparse::read(&file, size).map_err(|e| InspectError::io(path, &e))?;
        let mut bin = GoBinary::from_bytes(path.to_path_buf(), read.data)?;
        bin.left_out = read.skipped.map(|s| (file, s));
        Ok(bin)
    }

    /// As [`open`](Self::open), for bytes already in memory.
    pub(crate) fn from_bytes(path: PathBuf, data: Vec<u8>) -> Result<GoBinary, InspectError> {
        let elf = ElfLayout::parse(&data)?;
        let build = match buildinfo::read(&data, &elf)? {
            Some(b) => b,
            None => without_build_info(&data, &elf)?,
        };
        if build.version < GoVersion::new(1, 17, 0) {
            return Err(InspectError::GoTooOld(build.version));
        }
        let index = FunctionIndex::build(&data, &elf)?;
        Ok(GoBinary {
            path,
            data,
            left_out: None,
            whole: std::cell::OnceCell::new(),
            elf,
            build,
            index,
            types: std::cell::OnceCell::new(),
            #[cfg(test)]
            no_type_metadata: false,
            #[cfg(test)]
            no_table_row: false,
        })
    }

    /// Offsets of struct fields read from the binary's runtime type descriptors, keyed as
    /// DWARF keys them (see [`typemeta::TypeSection::struct_fields`]).
    pub(crate) fn type_fields(
        &self,
        wanted: &[(&str, &[&str])],
        renamed: &[(&str, &str)],
    ) -> Result<dwarf::FieldOffsets, typemeta::TypeMetaError> {
        #[cfg(test)]
        if self.no_type_metadata {
            return Err(typemeta::TypeMetaError::NoModuledata);
        }
        let types = self.types.get_or_init(|| {
            let t = pclntab::Pclntab::find(&self.data, &self.elf)
                .map_err(|_| typemeta::TypeMetaError::NoModuledata)?;
            let md = t.moduledata.ok_or(typemeta::TypeMetaError::NoModuledata)?;
            typemeta::TypeSection::locate(
                &self.data,
                &self.elf,
                md,
                t.generation,
                Some(self.go_version()),
            )
        });
        match types {
            Ok(t) => t.struct_fields(&self.data, &self.elf, wanted, renamed),
            Err(e) => Err(e.clone()),
        }
    }

    /// False when the module list is unknown (no build-info blob).
    pub(crate) fn has_build_info(&self) -> bool {
        self.build.from_blob
    }

    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Every byte of the file (tests check the inspector's answers against them).
    #[cfg(test)]
    pub(crate) fn data(&self) -> &[u8] {
        self.whole().expect("the file, read again")
    }

    #[cfg(test)]
    pub(crate) fn elf(&self) -> &ElfLayout {
        &self.elf
    }

    pub(crate) fn go_version(&self) -> GoVersion {
        self.build.version
    }

    #[cfg(test)]
    pub(crate) fn build_info(&self) -> &buildinfo::BuildInfo {
        &self.build
    }

    pub(crate) fn symbol_source(&self) -> SymbolSource {
        self.index.source()
    }

    /// A fresh `object` view of the bytes (for DWARF).
    pub(crate) fn object(&self) -> Result<object::File<'_>, InspectError> {
        let data = match &self.left_out {
            Some((_, skipped)) if skipped.debug => self.whole()?,
            _ => &self.data,
        };
        object::File::parse(data).map_err(|e| InspectError::NotElf(e.to_string()))
    }

    /// Every byte of the file, read once when `data` left some out.
    fn whole(&self) -> Result<&[u8], InspectError> {
        let Some((file, _)) = &self.left_out else {
            return Ok(&self.data);
        };
        if let Some(w) = self.whole.get() {
            return Ok(w);
        }
        use std::os::unix::fs::FileExt as _;
        let mut w = vec![0u8; self.data.len()];
        file.read_exact_at(&mut w, 0)
            .map_err(|e| InspectError::io(&self.path, &e))?;
        Ok(self.whole.get_or_init(|| w))
    }

    /// Entry and end virtual address of a function by its full Go name
    /// (`net/http.serverHandler.ServeHTTP`, `net/http.(*response).WriteHeader`).
    pub(crate) fn find_function(&self, name: &str) -> Option<(u64, u64)> {
        match self.index.find(&self.data, &self.elf, name) {
            Some((entry, end)) if end > entry => Some((entry, end)),
            // A partial `.symtab` (or one without sizes) does not hide what the runtime's
            // own table knows.
            _ if self.index.source() == SymbolSource::Symtab => {
                let t = pclntab::Pclntab::find(&self.data, &self.elf).ok()?;
                t.find_function(&self.data, &self.elf, name)
            }
            _ => None,
        }
    }

    /// The file offset uprobes take for a mapped address.
    pub(crate) fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.elf.vaddr_to_offset(vaddr)
    }

    /// Virtual addresses of every RET in `[entry, end)`.
    pub(crate) fn ret_vaddrs(&self, entry: u64, end: u64) -> Result<Vec<u64>, InspectError> {
        let len = end
            .checked_sub(entry)
            .filter(|&l| l > 0 && l <= MAX_FUNCTION_SIZE)
            .ok_or_else(|| {
                InspectError::Malformed(format!("bad function bounds {entry:#x}..{end:#x}"))
            })?;
        let outside =
            || InspectError::Malformed(format!("function at {entry:#x} is outside the file"));
        let code = self
            .elf
            .bytes_at(&self.data, entry, len)
            .ok_or_else(outside)?;
        if let Some((file, skipped)) = &self.left_out {
            let offset = self.elf.vaddr_to_offset(entry).ok_or_else(outside)?;
            if skipped.covers_code(offset, len) {
                use std::os::unix::fs::FileExt as _;
                let mut code = vec![0u8; code.len()];
                file.read_exact_at(&mut code, offset)
                    .map_err(|e| InspectError::io(&self.path, &e))?;
                return Ok(ret::ret_sites(&code, entry));
            }
        }
        Ok(ret::ret_sites(code, entry))
    }

    /// Everything needed to probe one function: entry and every RET, as file offsets.
    pub(crate) fn function_probe(
        &self,
        role: ProbeRole,
        name: &str,
    ) -> Result<FunctionProbe, InspectError> {
        let (entry, end) = self
            .find_function(name)
            .ok_or_else(|| InspectError::MissingFunction(name.to_string()))?;
        let outside =
            |v: u64| InspectError::Malformed(format!("{name}: address {v:#x} is not in the file"));
        let entry_offset = self.file_offset(entry).ok_or_else(|| outside(entry))?;
        let ret_offsets = self
            .ret_vaddrs(entry, end)?
            .into_iter()
            .map(|v| self.file_offset(v).ok_or_else(|| outside(v)))
            .collect::<Result<Vec<_>, _>>()?;
        if ret_offsets.is_empty() {
            return Err(InspectError::Malformed(format!(
                "{name}: no RET instruction found"
            )));
        }
        Ok(FunctionProbe {
            role,
            symbol: name.to_string(),
            entry_vaddr: entry,
            entry_offset,
            ret_offsets,
        })
    }

    /// Struct offsets: the runtime type metadata, else DWARF when the binary has it, else the
    /// built-in table.
    #[cfg(test)]
    pub(crate) fn offsets(&self) -> Result<(OffsetsSource, super::GoOffsets), InspectError> {
        self.offsets_for(fields::Needs::ALL)
            .map(|r| (OffsetsSource::of(&r), r.offsets))
    }

    /// The offsets the probes in `needs` read, each from the first source that describes it:
    /// the binary's type metadata, its DWARF, the built-in table (see [`fields`]).
    pub(crate) fn offsets_for(
        &self,
        needs: fields::Needs,
    ) -> Result<fields::Resolved, InspectError> {
        let path = self.path.display();
        let type_meta = match self.type_fields(dwarf::WANTED, dwarf::RENAMED) {
            Ok(f) => Some(f),
            Err(typemeta::TypeMetaError::Timeout) => {
                return Err(InspectError::Timeout(std::time::Duration::ZERO))
            }
            Err(e) => {
                tracing::info!(%path, "no offsets from type metadata ({e}): offsets from DWARF or the built-in table");
                None
            }
        };
        let mut timed_out = false;
        let dwarf = || match self.object().map(|f| dwarf::fields(&f)) {
            Ok(Ok(found)) => found,
            Ok(Err(dwarf::DwarfError::Timeout)) => {
                timed_out = true;
                None
            }
            Ok(Err(e)) => {
                tracing::warn!(%path, error = %e, "cannot read struct offsets from DWARF");
                None
            }
            Err(e) => {
                tracing::warn!(%path, error = %e, "cannot parse ELF for DWARF");
                None
            }
        };
        let v = self.go_version();
        #[cfg(test)]
        let no_row = self.no_table_row;
        #[cfg(not(test))]
        let no_row = false;
        let table = || {
            if no_row {
                return None;
            }
            offsets_table::lookup(v)
        };
        let resolved = fields::resolve(needs, type_meta.as_ref(), dwarf, table);
        if timed_out {
            return Err(InspectError::Timeout(std::time::Duration::ZERO));
        }
        let resolved = resolved.map_err(|fields::Missing(field)| {
            tracing::info!(%path, "no source describes {field}: not in the type metadata, no DWARF, no table row for Go {v}");
            InspectError::NoOffsets(v)
        })?;
        if type_meta.is_some() {
            let elsewhere: Vec<String> = fields::FIELDS
                .iter()
                .zip(&resolved.sources)
                .filter(|(_, s)| {
                    !matches!(
                        s,
                        fields::FieldSource::TypeMetadata | fields::FieldSource::NotNeeded
                    )
                })
                .map(|(f, s)| format!("{} ({s})", f.display()))
                .collect();
            if !elsewhere.is_empty() {
                tracing::info!(
                    %path,
                    "type metadata does not describe {}: taken from the sources named",
                    elsewhere.join(", ")
                );
            }
        }
        Ok(resolved)
    }

    /// The probe plan for this binary.
    /// Server and client probes are each taken when the function is linked in; a binary
    /// with neither cannot be instrumented.
    pub(crate) fn plan(&self) -> Result<ProbePlan, InspectError> {
        let server = self.function_probe(ProbeRole::HttpServerHandler, SERVE_HTTP);
        let client = self.function_probe(ProbeRole::HttpClientRoundTrip, ROUND_TRIP);
        let grpc = grpc::plan(self);
        let speaks = Speaks {
            tls_server: self.find_function(TLS_SERVER_HANDSHAKE).is_some(),
            grpc: grpc.is_some() || grpc::linked(self),
            h2c: self.find_function(H2C_HANDLER).is_some(),
        };
        let mut probes: Vec<FunctionProbe> = match (server, client) {
            (Err(e), Err(_)) if grpc.is_none() => return Err(e),
            (server, client) => server
                .into_iter()
                .chain(client)
                .chain(self.function_probe(ProbeRole::GoroutineStart, NEWPROC1))
                .collect(),
        };
        let grpc = grpc.map(|(plan, grpc_probes)| {
            probes.extend(grpc_probes);
            plan
        });
        // Only the fields the planned probes read are needed: a gRPC-only binary needs no
        // HTTP field, a client-only one no server writer.
        let has = |role| probes.iter().any(|p| p.role == role);
        let resolved = self.offsets_for(fields::Needs {
            server: has(ProbeRole::HttpServerHandler),
            client: has(ProbeRole::HttpClientRoundTrip),
        })?;
        Ok(ProbePlan {
            path: self.path.clone(),
            go_version: self.go_version(),
            symbols: self.symbol_source(),
            offsets_source: OffsetsSource::of(&resolved),
            offsets: resolved.offsets,
            offset_sources: resolved.sources,
            modules_known: self.has_build_info(),
            probes,
            grpc,
            speaks,
        })
    }
}

/// A Go binary without a build-info blob (release builds of some tools strip it): known by
/// its runtime function table, versioned by the runtime's own version string.
fn without_build_info(data: &[u8], elf: &ElfLayout) -> Result<buildinfo::BuildInfo, InspectError> {
    if pclntab::Pclntab::find(data, elf).is_err() {
        return Err(InspectError::NotGo);
    }
    let (version_string, version) = typemeta::runtime_version(data, elf).ok_or_else(|| {
        InspectError::Malformed("Go runtime table but no Go version string".into())
    })?;
    Ok(buildinfo::BuildInfo {
        version_string,
        version,
        modinfo: String::new(),
        from_blob: false,
    })
}
