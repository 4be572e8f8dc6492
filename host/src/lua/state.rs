//! One Lua state of the host: its creation (allocator cap, hook, `core`,
//! blocking-call guard), the files it loads, what they register, and the
//! phases it goes through (body, init, runtime).

use crate::lua::blocking::{self, BlockingMode};
use crate::lua::exec::{self, Budget, ExecCtx, ExecError};
use crate::lua::{applet_http, applet_tcp, class::Class, core_api, memory};
use mlua::{Function, Lua, MultiValue, Value};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

/// The settings that apply to a state (from `global`).
#[derive(Clone, Debug)]
pub struct LuaSettings {
    pub forced_yield: u32,
    pub session_timeout: Option<Duration>,
    pub service_timeout: Option<Duration>,
    pub task_timeout: Option<Duration>,
    pub burst_timeout: Option<Duration>,
    pub blocking: BlockingMode,
    /// `tune.lua.bytecode allow`: binary chunks load at runtime too.
    pub bytecode_allowed: bool,
    /// `lua-prepend-path` entries: (pattern, is_cpath).
    pub prepend_paths: Vec<(String, bool)>,
    pub nbthread: usize,
    /// `tune.lua.openlibs`: the optional standard libraries to keep
    /// (`None`: all).
    pub openlibs: Option<Vec<String>>,
}

impl LuaSettings {
    pub fn service_budget(&self) -> Budget {
        Budget {
            total: self.service_timeout,
            burst: self.burst_timeout,
        }
    }
    pub fn session_budget(&self) -> Budget {
        Budget {
            total: self.session_timeout,
            burst: self.burst_timeout,
        }
    }
    pub fn task_budget(&self) -> Budget {
        Budget {
            total: self.task_timeout,
            burst: self.burst_timeout,
        }
    }
}

/// Where a state is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Running the top level of lua-load files: registration allowed.
    Body,
    /// Running register_init functions.
    Init,
    /// Serving.
    Runtime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceMode {
    Http,
    Tcp,
}

pub struct ServiceReg {
    pub func: Function,
    pub mode: ServiceMode,
}

/// One `core.register_action` registration for one rule-set kind.
pub struct ActionReg {
    /// The rule-set kind ("http-req", "http-res", ...), one of
    /// `core_api::ACTION_KINDS`.
    pub kind: &'static str,
    pub func: Function,
    pub nb_args: usize,
}

/// What the scripts of a state registered.
#[derive(Default)]
pub struct Registrations {
    pub services: HashMap<String, ServiceReg>,
    /// Actions by name, then by rule-set kind: HAProxy keeps one keyword list
    /// per kind, so one name may be registered with a different function for
    /// each (a CORS script registers "cors" for http-req and for http-res).
    pub actions: HashMap<String, Vec<ActionReg>>,
    pub fetches: HashMap<String, Function>,
    pub converters: HashMap<String, Function>,
    pub inits: Vec<Function>,
    /// Tasks registered in the body, started after the init functions.
    pub pending_tasks: Vec<(Function, Vec<Value>)>,
    /// `core.register_cli` commands, in registration order.
    pub clis: Vec<CliReg>,
}

/// A `core.register_cli` command: its words, its help text and its function.
pub struct CliReg {
    pub path: Vec<String>,
    pub usage: String,
    pub func: Function,
}

/// The class metatables of a state.
pub struct Classes {
    pub applet_http: Class,
    pub applet_tcp: Class,
    pub txn: Class,
    pub reply: Class,
    pub http: Class,
    pub channel: Class,
    pub samples: crate::lua::fetches_class::SampleClasses,
}

/// Per-state data reachable from Lua callbacks (through app data).
pub struct StateInfo {
    /// `core.thread`: 0 for the shared state, 1..=nbthread per thread.
    pub thread_num: usize,
    pub settings: Rc<LuaSettings>,
    pub phase: Cell<Phase>,
    pub regs: RefCell<Registrations>,
    pub blocking_sites: RefCell<HashSet<String>>,
    pub classes: Classes,
    /// `set_priv` data of transactions in progress, by transaction id.
    pub privs: RefCell<HashMap<u64, Value>>,
    /// Set by `act:wake_time(ms)` during an action.
    pub wake_time: Cell<Option<u64>>,
    /// The live proxies and servers (`core.backends`, `nbsrv`...): empty
    /// until the proxy hands its model over ([`HostState::set_registry`]).
    pub registry: RefCell<std::sync::Arc<crate::backend::Registry>>,
}

/// A Lua state with its bookkeeping.
pub struct HostState {
    pub lua: Lua,
    pub info: Rc<StateInfo>,
}

impl HostState {
    pub fn new(settings: Rc<LuaSettings>, thread_num: usize) -> mlua::Result<Rc<HostState>> {
        // SAFETY: unsafe_new opens all standard libraries and allows C
        // modules, as HAProxy's Lua does; scripts are the operator's code.
        let lua = unsafe { Lua::unsafe_new() };
        // Under a cap (tune.lua.maxmem), an allocation may fail anywhere:
        // setting an mlua limit makes mlua expect that and run each of its own
        // allocations (strings, tables, userdata created from Rust) as a
        // protected call, so a failure is an error and never a jump across
        // Rust frames. The real cap is enforced by the allocator installed
        // next. Without a cap the allocator only fails when the system is out
        // of memory, and mlua's unprotected fast paths apply: each protected
        // call costs more than the allocation it guards.
        if memory::limit() != 0 {
            lua.set_memory_limit(usize::MAX)?;
        }
        memory::install(&lua);
        // Requests leave short-lived objects behind (TXN/applet tables,
        // strings); the generational collector handles that pattern with
        // less work than the incremental one (measured in docs/benchmarks.md).
        lua.load("collectgarbage('generational')")
            .set_name("=luahost-gc")
            .exec()?;
        let samples = crate::lua::fetches_class::classes(&lua)?;
        let classes = Classes {
            applet_http: applet_http::class(&lua, &samples)?,
            applet_tcp: applet_tcp::class(&lua, &samples)?,
            txn: crate::lua::txn_class::class(&lua)?,
            reply: crate::lua::txn_class::reply_class(&lua)?,
            http: crate::lua::http_class::class(&lua)?,
            channel: crate::lua::channel_class::class(&lua)?,
            samples,
        };
        crate::lua::txn_class::install_lazy_fields(&lua, &classes)?;
        let info = Rc::new(StateInfo {
            thread_num,
            settings: settings.clone(),
            phase: Cell::new(Phase::Body),
            regs: RefCell::new(Registrations::default()),
            blocking_sites: RefCell::new(HashSet::new()),
            classes,
            privs: RefCell::new(HashMap::new()),
            wake_time: Cell::new(None),
            registry: RefCell::new(std::sync::Arc::new(crate::backend::Registry::empty())),
        });
        lua.set_app_data(info.clone());
        core_api::install(&lua, &info)?;
        crate::lua::coroutines::install(&lua)?;
        crate::lua::errors::install_normalizer(&lua)?;
        crate::lua::bytecode::install(&lua, &info)?;
        blocking::install(&lua, &info)?;
        prepend_paths(&lua, &settings.prepend_paths)?;
        crate::lua::long_calls::install(&lua)?;
        let hooks = crate::lua::debug_hooks::ScriptHooks::install(&lua, settings.forced_yield)?;
        exec::install_hook(&lua, settings.forced_yield, hooks.clone())?;
        exec::ThreadPool::install(&lua, hooks)?;
        crate::lua::native_async::install(&lua)?;
        // After the guards above, which replace functions of these libraries.
        if let Some(keep) = &settings.openlibs {
            restrict_libs(&lua, keep)?;
        }
        Ok(Rc::new(HostState { lua, info }))
    }

    /// Runs a lua-load file's body with its arguments as `...`. The error
    /// is Lua's own message (file:line: ...).
    pub fn load_file(&self, path: &Path, args: &[String]) -> Result<(), String> {
        let source =
            std::fs::read(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let chunk = self
            .lua
            .load(source)
            .set_name(format!("@{}", path.display()))
            .into_function()
            .map_err(|e| crate::lua::errors::message(&e))?;
        let args: MultiValue = args
            .iter()
            .map(|a| self.lua.create_string(a).map(Value::String))
            .collect::<mlua::Result<_>>()
            .map_err(|e| crate::lua::errors::message(&e))?;
        chunk
            .call::<()>(args)
            .map_err(|e| crate::lua::errors::message(&e))
    }

    /// Runs the init functions in order (each may yield), then enters the
    /// runtime phase and starts the tasks registered so far.
    pub async fn run_inits_and_start(self: &Rc<Self>) -> Result<(), String> {
        self.info.phase.set(Phase::Init);
        let inits = self.info.regs.borrow().inits.clone();
        for f in inits {
            let ctx = ExecCtx::new(Budget::default(), true);
            match exec::run_coroutine::<()>(&self.lua, ctx, f, ()).await {
                Ok(()) | Err(ExecError::Done) => {}
                Err(e) => return Err(format!("Lua init: {}.", e.message())),
            }
        }
        self.info.phase.set(Phase::Runtime);
        let tasks = std::mem::take(&mut self.info.regs.borrow_mut().pending_tasks);
        for (f, args) in tasks {
            spawn_task(self.lua.clone(), self.info.clone(), f, args);
        }
        Ok(())
    }
}

impl HostState {
    /// Hands the live model of proxies and servers to the state (before its
    /// files are loaded, so that load-time code sees it).
    pub fn set_registry(&self, registry: std::sync::Arc<crate::backend::Registry>) {
        *self.info.registry.borrow_mut() = registry;
    }
}

impl HostState {
    /// The function of registered service `name`.
    pub fn service(&self, name: &str) -> Option<Function> {
        self.info
            .regs
            .borrow()
            .services
            .get(name)
            .map(|s| s.func.clone())
    }
}

impl HostState {
    /// The function of `core.register_cli` command `path`.
    pub fn cli_command(&self, path: &[String]) -> Option<Function> {
        self.info
            .regs
            .borrow()
            .clis
            .iter()
            .find(|c| c.path == path)
            .map(|c| c.func.clone())
    }
}

/// Runs a task (register_task) on the current worker until it ends.
pub fn spawn_task(lua: Lua, info: Rc<StateInfo>, func: Function, args: Vec<Value>) {
    tokio::task::spawn_local(async move {
        let ctx = ExecCtx::new(info.settings.task_budget(), true);
        match exec::run_coroutine::<()>(&lua, ctx, func, MultiValue::from_vec(args)).await {
            Ok(()) | Err(ExecError::Done) => {}
            Err(e) => crate::log::log(crate::log::ERR, &format!("Lua task: {}.", e.message())),
        }
    });
}

/// The optional standard libraries, as `tune.lua.openlibs` names them.
const OPTIONAL_LIBS: &[&str] = &[
    "table", "io", "os", "string", "math", "utf8", "package", "debug",
];

/// `tune.lua.openlibs`: makes the libraries not in `keep` unreachable, so
/// the state looks like HAProxy's, which never opens them (base and
/// coroutine are always there). The state is built with every library
/// first because luahost's own set-up code uses some of them; it keeps
/// private references only, none reachable from scripts.
fn restrict_libs(lua: &Lua, keep: &[String]) -> mlua::Result<()> {
    let dropped: Vec<&str> = OPTIONAL_LIBS
        .iter()
        .copied()
        .filter(|l| !keep.iter().any(|k| k == l))
        .collect();
    if dropped.is_empty() {
        return Ok(());
    }
    let list = lua.create_sequence_from(dropped)?;
    lua.load(
        r#"
local dropped = ...
local setmetatable_any = debug.setmetatable
local loaded = package.loaded
for _, name in ipairs(dropped) do
  _G[name] = nil
  loaded[name] = nil
  -- Without the string library, strings have no methods either.
  if name == "string" then setmetatable_any("", nil) end
  -- Without package there is no require.
  if name == "package" then _G.require = nil end
end
"#,
    )
    .set_name("=luahost-openlibs")
    .call::<()>(list)
}

/// Applies `lua-prepend-path`.
fn prepend_paths(lua: &Lua, paths: &[(String, bool)]) -> mlua::Result<()> {
    let package: mlua::Table = match lua.globals().get("package")? {
        Value::Table(t) => t,
        // tune.lua.openlibs without package: there is no search path.
        _ => return Ok(()),
    };
    for (p, cpath) in paths {
        let key = if *cpath { "cpath" } else { "path" };
        let cur: String = package.get(key)?;
        package.set(key, format!("{p};{cur}"))?;
    }
    Ok(())
}
