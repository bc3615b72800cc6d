//! A safe unpickler for the pickles `torch.save` writes.
//!
//! It interprets the opcodes of protocols 2–5 that torch (and the objects commonly pickled next to
//! a state dict) use, building plain [`Value`]s. Nothing is ever imported or executed: `GLOBAL` /
//! `STACK_GLOBAL` resolve only to an allow-list of torch constructors ([`Global`]); any other
//! global becomes an [`Value::Opaque`] placeholder, and calling, instantiating or `BUILD`ing an
//! opaque value yields another opaque value — so a pickled config object (an argparse
//! `Namespace`, a training-config class…) is skipped rather than rejected or run.
//!
//! Safety against hostile input: every length is checked against the remaining bytes before it is
//! read (allocations are bounded by the pickle's size), shared objects are reference-counted (no
//! exponential copies through the memo), the few opcodes that copy a shared container's items
//! (an `OrderedDict` built from a list of pairs, a tensor's size and stride tuples) draw on a
//! budget proportional to the pickle's length, containers are dropped iteratively (no stack
//! overflow on deeply nested input), and every list and dict is emptied when the unpickled value
//! is dropped ([`Containers`]), so a pickle that appends a list to itself does not leak a cycle.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use crate::weights::WeightDType;

/// A torch global the unpickler knows how to interpret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Global {
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`.
    RebuildTensorV2,
    /// `torch._utils._rebuild_tensor_v3(…, dtype[, metadata])`.
    RebuildTensorV3,
    /// `torch._utils._rebuild_parameter(data, requires_grad, hooks)` (and `_with_state`).
    RebuildParameter,
    /// `collections.OrderedDict`.
    OrderedDict,
    /// A `torch.*Storage` type marker of the given element type.
    Storage(WeightDType),
    /// A `torch.<dtype>` object (`torch.float32`…).
    Dtype(WeightDType),
    /// `torch.device`.
    Device,
}

/// Element type of `torch.<name>Storage`.
fn storage_dtype(name: &str) -> Option<WeightDType> {
    Some(match name {
        "DoubleStorage" => WeightDType::F64,
        "FloatStorage" => WeightDType::F32,
        "HalfStorage" => WeightDType::F16,
        "BFloat16Storage" => WeightDType::BF16,
        "LongStorage" => WeightDType::I64,
        "IntStorage" => WeightDType::I32,
        "ShortStorage" => WeightDType::I16,
        "CharStorage" => WeightDType::I8,
        "ByteStorage" | "UntypedStorage" => WeightDType::U8,
        "BoolStorage" => WeightDType::Bool,
        _ => return None,
    })
}

/// Element type of the `torch.<name>` dtype object.
fn dtype_object(name: &str) -> Option<WeightDType> {
    Some(match name {
        "float64" | "double" => WeightDType::F64,
        "float32" | "float" => WeightDType::F32,
        "float16" | "half" => WeightDType::F16,
        "bfloat16" => WeightDType::BF16,
        "int64" | "long" => WeightDType::I64,
        "int32" | "int" => WeightDType::I32,
        "int16" | "short" => WeightDType::I16,
        "int8" => WeightDType::I8,
        "uint8" => WeightDType::U8,
        "bool" => WeightDType::Bool,
        _ => return None,
    })
}

/// Resolves `module.name` against the allow-list.
fn resolve(module: &str, name: &str) -> Option<Global> {
    match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_tensor_v3") => Some(Global::RebuildTensorV3),
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => Some(Global::RebuildParameter),
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch", "device") => Some(Global::Device),
        ("torch", n) => storage_dtype(n).map(Global::Storage).or_else(|| dtype_object(n).map(Global::Dtype)),
        _ => None,
    }
}

/// A storage named by a persistent id: `('storage', type, key, location, numel[, view])`.
#[derive(Clone, Debug)]
pub(super) struct StorageRef {
    /// Archive key (zip: `data/<key>`; legacy: position in the key list).
    pub(super) key: Rc<str>,
    /// Element type from the storage type marker.
    pub(super) dtype: WeightDType,
    /// Declared element count.
    pub(super) numel: u64,
    /// Element offset of a legacy storage view into its root storage (0 otherwise).
    pub(super) view_offset: u64,
}

/// A tensor rebuilt by `_rebuild_tensor_v2/v3`: a strided view of a storage.
#[derive(Clone, Debug)]
pub(super) struct TensorRef {
    /// The storage.
    pub(super) storage: StorageRef,
    /// Element type (the storage's, or v3's explicit dtype).
    pub(super) dtype: WeightDType,
    /// Storage offset in elements.
    pub(super) offset: u64,
    /// Sizes, outermost first.
    pub(super) shape: Vec<u64>,
    /// Strides in elements.
    pub(super) stride: Vec<u64>,
}

/// Items of a tuple/list, or flattened `k0, v0, k1, v1, …` of a dict. Dropped iteratively.
#[derive(Default)]
pub(super) struct Items(pub(super) Vec<Value>);

impl Drop for Items {
    fn drop(&mut self) {
        let mut stack = std::mem::take(&mut self.0);
        while let Some(v) = stack.pop() {
            match v {
                Value::Tuple(rc) => {
                    if let Ok(mut items) = Rc::try_unwrap(rc) {
                        stack.append(&mut items.0);
                    }
                }
                Value::List(rc) | Value::Dict(rc) => {
                    if let Ok(cell) = Rc::try_unwrap(rc) {
                        let mut items = cell.into_inner();
                        stack.append(&mut items.0);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Every list and dict an unpickling created. Dropping it empties them all, which breaks any
/// reference cycle a pickle built (a list appended to itself…): keep it alive as long as the
/// unpickled [`Value`] is used.
#[derive(Default)]
pub(super) struct Containers(Vec<Rc<RefCell<Items>>>);

impl Drop for Containers {
    fn drop(&mut self) {
        for c in self.0.drain(..) {
            // Taken out first so that the RefCell is no longer borrowed while the items drop.
            let items = c.try_borrow_mut().map(|mut i| std::mem::take(&mut i.0));
            drop(items);
        }
    }
}

/// An unpickled value. Containers are shared (`Rc`) as Python's are.
#[derive(Clone)]
pub(super) enum Value {
    /// `None`.
    None,
    /// A bool.
    Bool(bool),
    /// An int that fits i64 (larger ones are [`Value::Opaque`]).
    Int(i64),
    /// A float.
    Float(f64),
    /// A str (or py2 str).
    Str(Rc<str>),
    /// A bytes object (its length only; the content is never needed).
    Bytes(usize),
    /// A tuple.
    Tuple(Rc<Items>),
    /// A list (or set).
    List(Rc<RefCell<Items>>),
    /// A dict, items flattened as `k, v, k, v…`.
    Dict(Rc<RefCell<Items>>),
    /// An allow-listed torch global.
    Global(Global),
    /// A storage from a persistent id.
    Storage(StorageRef),
    /// A tensor.
    Tensor(Rc<TensorRef>),
    /// Anything else (an unknown global, or an object built from one): its description.
    Opaque(Rc<str>),
}

impl Value {
    /// Short description for error messages and metadata.
    pub(super) fn kind(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(i) => format!("int {i}"),
            Value::Float(f) => format!("float {f}"),
            Value::Str(_) => "str".into(),
            Value::Bytes(n) => format!("bytes of length {n}"),
            Value::Tuple(_) => "tuple".into(),
            Value::List(_) => "list".into(),
            Value::Dict(_) => "dict".into(),
            Value::Global(g) => format!("{g:?}"),
            Value::Storage(_) => "storage".into(),
            Value::Tensor(_) => "tensor".into(),
            Value::Opaque(n) => format!("skipped object {n}"),
        }
    }

    /// The int, if this is one.
    fn int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }
}

/// Persistent-id flavour: the zip format's 5-tuple or the legacy format's 6-tuple with a view.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum PidStyle {
    /// `('storage', type, key, location, numel)`.
    Zip,
    /// `('storage', type, root_key, location, numel, view_metadata)`.
    Legacy,
}

/// Why unpickling failed (turned into a `KestrelError::Weights` by the caller).
pub(super) type PickleError = String;

/// The result of [`unpickle`].
pub(super) struct Unpickled {
    /// The pickled object.
    pub(super) value: Value,
    /// Bytes the pickle occupied (up to and including STOP).
    pub(super) consumed: usize,
    /// Element type of every storage key a persistent id named.
    pub(super) storages: HashMap<Rc<str>, WeightDType>,
    /// The lists and dicts of `value`, emptied when this is dropped.
    pub(super) containers: Containers,
    /// Callables the pickle asked to call or instantiate that were skipped, not run (at most
    /// [`MAX_SKIPPED_CALLS`] names, e.g. `os.system`).
    pub(super) skipped_calls: BTreeSet<String>,
}

/// How many skipped callables are named.
const MAX_SKIPPED_CALLS: usize = 16;

/// Values that copying opcodes may materialise per byte of pickle (see [`Machine::charge`]).
const COPY_BUDGET_PER_BYTE: usize = 2;

/// Unpickles one pickle starting at `data[0]`.
pub(super) fn unpickle(data: &[u8], pids: PidStyle) -> Result<Unpickled, PickleError> {
    let mut m = Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        pids,
        storages: HashMap::new(),
        containers: Containers::default(),
        skipped_calls: BTreeSet::new(),
        budget: data.len().saturating_mul(COPY_BUDGET_PER_BYTE).saturating_add(64),
    };
    // On an error the machine (stack, memo, containers) is dropped, emptying every container.
    let value = m.run()?;
    Ok(Unpickled {
        value,
        consumed: m.pos,
        storages: std::mem::take(&mut m.storages),
        containers: std::mem::take(&mut m.containers),
        skipped_calls: std::mem::take(&mut m.skipped_calls),
    })
}

/// The pickle virtual machine's state.
struct Machine<'a> {
    /// The pickle bytes.
    data: &'a [u8],
    /// Read position.
    pos: usize,
    /// Value stack.
    stack: Vec<Value>,
    /// Stack lengths at each MARK.
    marks: Vec<usize>,
    /// Memo.
    memo: HashMap<u64, Value>,
    /// Persistent-id flavour.
    pids: PidStyle,
    /// Storage keys seen in persistent ids, with their element types.
    storages: HashMap<Rc<str>, WeightDType>,
    /// Every list and dict created so far.
    containers: Containers,
    /// Values that copying opcodes may still materialise.
    budget: usize,
    /// Callables skipped instead of called (see [`Unpickled::skipped_calls`]).
    skipped_calls: BTreeSet<String>,
}

impl Machine<'_> {
    /// A new empty list or dict, registered in `containers`.
    fn container(&mut self) -> Rc<RefCell<Items>> {
        let c = Rc::new(RefCell::new(Items::default()));
        self.containers.0.push(c.clone());
        c
    }

    /// Draws `n` copied values from the budget. Each item of a shared container took at least
    /// one byte to pickle, but the memo can name the container many times: without a budget, a
    /// 64 KiB pickle could make gigabytes of copies.
    fn charge(&mut self, n: usize) -> Result<(), PickleError> {
        self.budget = self.budget.checked_sub(n).ok_or_else(|| {
            format!("pickle copies more values than its {} bytes can describe (a memo reference repeated to inflate it)", self.data.len())
        })?;
        Ok(())
    }

    /// Next `n` bytes.
    fn take(&mut self, n: usize) -> Result<&[u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| format!("pickle truncated at byte {} (needs {n} more bytes)", self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Next byte.
    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    /// Next little-endian u16.
    fn u16(&mut self) -> Result<u16, PickleError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    /// Next little-endian u32.
    fn u32(&mut self) -> Result<u32, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Next little-endian u64.
    fn u64(&mut self) -> Result<u64, PickleError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A length field converted to usize (then checked by `take`).
    fn len_u64(&mut self) -> Result<usize, PickleError> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| format!("pickle length {n} too large"))
    }

    /// A newline-terminated text line (GLOBAL arguments).
    fn line(&mut self) -> Result<String, PickleError> {
        let rest = &self.data[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n').ok_or_else(|| format!("pickle truncated in a text line at byte {}", self.pos))?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }

    /// A UTF-8 string of `n` bytes.
    fn str(&mut self, n: usize) -> Result<Value, PickleError> {
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| "pickle string is not UTF-8".to_string())?;
        Ok(Value::Str(s.into()))
    }

    /// Pops the top value.
    fn pop(&mut self) -> Result<Value, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(format!("pickle stack underflow at byte {}", self.pos));
        }
        self.stack.pop().ok_or_else(|| "pickle stack underflow".to_string())
    }

    /// The top value.
    fn top(&self) -> Result<&Value, PickleError> {
        self.stack.last().ok_or_else(|| format!("pickle stack empty at byte {}", self.pos))
    }

    /// Pops everything above the last MARK.
    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let m = self.marks.pop().ok_or_else(|| format!("pickle: no MARK at byte {}", self.pos))?;
        Ok(self.stack.split_off(m))
    }

    /// Memoises the top of the stack.
    fn put(&mut self, idx: u64) -> Result<(), PickleError> {
        let v = self.top()?.clone();
        self.memo.insert(idx, v);
        Ok(())
    }

    /// Pushes a memoised value.
    fn get(&mut self, idx: u64) -> Result<(), PickleError> {
        let v = self.memo.get(&idx).cloned().ok_or_else(|| format!("pickle memo key {idx} not found"))?;
        self.stack.push(v);
        Ok(())
    }

    /// Appends `items` to the list on top of the stack.
    fn extend_list(&mut self, items: Vec<Value>) -> Result<(), PickleError> {
        match self.top()? {
            Value::List(l) => {
                let mut l = l.try_borrow_mut().map_err(|_| "pickle: list busy".to_string())?;
                l.0.extend(items);
                Ok(())
            }
            Value::Opaque(_) => Ok(()),
            other => Err(format!("pickle APPEND to a {}", other.kind())),
        }
    }

    /// Adds `k, v, k, v…` to the dict on top of the stack.
    fn extend_dict(&mut self, items: Vec<Value>) -> Result<(), PickleError> {
        if !items.len().is_multiple_of(2) {
            return Err("pickle SETITEMS with an odd number of items".into());
        }
        match self.top()? {
            Value::Dict(d) => {
                let mut d = d.try_borrow_mut().map_err(|_| "pickle: dict busy".to_string())?;
                d.0.extend(items);
                Ok(())
            }
            Value::Opaque(_) => Ok(()),
            other => Err(format!("pickle SETITEM on a {}", other.kind())),
        }
    }

    /// Runs to STOP.
    fn run(&mut self) -> Result<Value, PickleError> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(format!("unsupported pickle protocol {p}"));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint only
                }
                b'.' => return self.pop(),
                b'}' => {
                    let d = self.container();
                    self.stack.push(Value::Dict(d));
                }
                b']' | 0x8f => {
                    let l = self.container();
                    self.stack.push(Value::List(l));
                }
                b')' => self.stack.push(Value::Tuple(Rc::default())),
                b'(' => self.marks.push(self.stack.len()),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a { usize::from(self.u8()?) } else { self.u32()? as usize };
                    let b = self.take(n)?;
                    let v = long_le(b);
                    self.stack.push(v.map_or_else(|| Value::Opaque("int (wider than 64 bits)".into()), Value::Int));
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.stack.push(Value::Float(f64::from_be_bytes(a)));
                }
                0x8c => {
                    let n = usize::from(self.u8()?);
                    let v = self.str(n)?;
                    self.stack.push(v);
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.str(n)?;
                    self.stack.push(v);
                }
                0x8d => {
                    let n = self.len_u64()?;
                    let v = self.str(n)?;
                    self.stack.push(v);
                }
                b'U' | b'T' => {
                    // py2 str: bytes decoded as latin-1.
                    let n = if op == b'U' { usize::from(self.u8()?) } else { self.u32()? as usize };
                    let s: String = self.take(n)?.iter().map(|&b| char::from(b)).collect();
                    self.stack.push(Value::Str(s.into()));
                }
                b'C' | b'B' | 0x8e | 0x96 => {
                    let n = match op {
                        b'C' => usize::from(self.u8()?),
                        b'B' => self.u32()? as usize,
                        _ => self.len_u64()?,
                    };
                    self.take(n)?;
                    self.stack.push(Value::Bytes(n));
                }
                b'q' => {
                    let i = self.u8()?;
                    self.put(u64::from(i))?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.put(u64::from(i))?;
                }
                0x94 => {
                    let i = self.memo.len() as u64;
                    self.put(i)?;
                }
                b'h' => {
                    let i = self.u8()?;
                    self.get(u64::from(i))?;
                }
                b'j' => {
                    let i = self.u32()?;
                    self.get(u64::from(i))?;
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                b'a' => {
                    let v = self.pop()?;
                    self.extend_list(vec![v])?;
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    self.extend_list(items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.extend_dict(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.extend_dict(items)?;
                }
                b't' | 0x91 => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(Rc::new(Items(items))));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.stack.push(Value::Tuple(Rc::new(Items(items))));
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(global(&module, &name));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(global(&m, &n)),
                        _ => return Err("pickle STACK_GLOBAL needs two strings".into()),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let v = self.call(f, args)?;
                    self.stack.push(v);
                }
                0x81 => {
                    let _args = self.pop()?;
                    let cls = self.pop()?;
                    let v = self.instantiate(cls);
                    self.stack.push(v);
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let _args = self.pop()?;
                    let cls = self.pop()?;
                    let v = self.instantiate(cls);
                    self.stack.push(v);
                }
                b'b' => {
                    // BUILD sets state on the object below; the state is not needed.
                    self.pop()?;
                    self.top()?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let s = self.persistent(pid)?;
                    self.stack.push(s);
                }
                _ => return Err(format!("unsupported pickle opcode 0x{op:02x} at byte {at}")),
            }
        }
    }

    /// `REDUCE`: applies an allow-listed constructor; anything else gives an opaque value.
    fn call(&mut self, f: Value, args: Value) -> Result<Value, PickleError> {
        let Value::Global(g) = f else {
            self.note_skipped_call(&f);
            return Ok(Value::Opaque(format!("result of calling {}", f.kind()).into()));
        };
        let args: &[Value] = match &args {
            Value::Tuple(t) => &t.0,
            _ => return Err(format!("pickle REDUCE of {g:?} with non-tuple arguments")),
        };
        match g {
            Global::OrderedDict => {
                let d = self.container();
                if let Some(Value::List(pairs)) = args.first() {
                    let pairs = pairs.try_borrow().map_err(|_| "pickle: list busy".to_string())?;
                    self.charge(pairs.0.len().saturating_mul(2))?;
                    let mut flat = Vec::new();
                    for p in &pairs.0 {
                        match p {
                            Value::Tuple(kv) if kv.0.len() == 2 => flat.extend(kv.0.iter().cloned()),
                            _ => return Err("OrderedDict argument is not a list of pairs".into()),
                        }
                    }
                    d.try_borrow_mut().map_err(|_| "pickle: dict busy".to_string())?.0.extend(flat);
                }
                Ok(Value::Dict(d))
            }
            Global::RebuildTensorV2 | Global::RebuildTensorV3 => {
                // The size and stride tuples are copied into the tensor.
                let rank = |v: Option<&Value>| if let Some(Value::Tuple(t)) = v { t.0.len() } else { 0 };
                self.charge(rank(args.get(2)).saturating_add(rank(args.get(3))))?;
                rebuild_tensor(g, args)
            }
            Global::RebuildParameter => match args.first() {
                Some(t @ Value::Tensor(_)) => Ok(t.clone()),
                _ => Ok(Value::Opaque("parameter of a non-tensor".into())),
            },
            Global::Device => Ok(Value::Opaque("torch.device".into())),
            Global::Storage(_) | Global::Dtype(_) => Ok(Value::Opaque(format!("call of {g:?}").into())),
        }
    }

    /// `NEWOBJ`: only `OrderedDict` is instantiated; anything else is opaque.
    fn instantiate(&mut self, cls: Value) -> Value {
        match cls {
            Value::Global(Global::OrderedDict) => Value::Dict(self.container()),
            Value::Opaque(n) => {
                self.note_skipped_call(&Value::Opaque(n.clone()));
                Value::Opaque(n)
            }
            other => Value::Opaque(format!("instance of {}", other.kind()).into()),
        }
    }

    /// Records a callable that was skipped instead of called: an unknown global by its
    /// `module.name`, anything else by its kind.
    fn note_skipped_call(&mut self, f: &Value) {
        if self.skipped_calls.len() < MAX_SKIPPED_CALLS {
            self.skipped_calls.insert(match f {
                Value::Opaque(n) => n.to_string(),
                other => other.kind(),
            });
        }
    }

    /// `BINPERSID`: a storage reference.
    fn persistent(&mut self, pid: Value) -> Result<Value, PickleError> {
        let Value::Tuple(t) = &pid else {
            return Err(format!("unsupported persistent id ({})", pid.kind()));
        };
        let f = &t.0;
        let want = if self.pids == PidStyle::Zip { 5 } else { 6 };
        if f.len() != want || !matches!(&f[0], Value::Str(s) if &**s == "storage") {
            return Err(format!("unsupported persistent id (a {}-tuple; expected ('storage', …) of {want})", f.len()));
        }
        let dtype = match &f[1] {
            Value::Global(Global::Storage(d)) => *d,
            other => return Err(format!("persistent id names an unknown storage type ({})", other.kind())),
        };
        let key: Rc<str> = match &f[2] {
            Value::Str(s) => s.clone(),
            other => return Err(format!("storage key is a {}", other.kind())),
        };
        self.storages.insert(key.clone(), dtype);
        let numel = f[4].int().and_then(|n| u64::try_from(n).ok()).ok_or("storage size is not a non-negative int")?;
        let mut view_offset = 0;
        if self.pids == PidStyle::Legacy
            && let Value::Tuple(view) = &f[5]
        {
            // (view_key, offset, view_size): a view into the root storage.
            let off = view.0.get(1).and_then(Value::int).and_then(|n| u64::try_from(n).ok()).ok_or("bad legacy storage view")?;
            let size = view.0.get(2).and_then(Value::int).and_then(|n| u64::try_from(n).ok()).ok_or("bad legacy storage view")?;
            if off.checked_add(size).is_none_or(|e| e > numel) {
                return Err(format!("legacy storage view [{off}, +{size}) is past its root storage of {numel} elements"));
            }
            view_offset = off;
            return Ok(Value::Storage(StorageRef { key, dtype, numel: size, view_offset }));
        }
        Ok(Value::Storage(StorageRef { key, dtype, numel, view_offset }))
    }
}

/// Resolves a global to an allow-listed torch object or an opaque placeholder.
fn global(module: &str, name: &str) -> Value {
    resolve(module, name).map_or_else(|| Value::Opaque(format!("{module}.{name}").into()), Value::Global)
}

/// Little-endian two's-complement integer of LONG1/LONG4, if it fits i64.
fn long_le(b: &[u8]) -> Option<i64> {
    if b.is_empty() {
        return Some(0);
    }
    let neg = b[b.len() - 1] & 0x80 != 0;
    let fill = if neg { 0xFF } else { 0 };
    if b.len() > 8 && b[8..].iter().any(|&x| x != fill) {
        return None;
    }
    let mut a = [fill; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    let v = i64::from_le_bytes(a);
    // A value whose sign differs from the encoding's did not fit in 64 bits.
    ((v < 0) == neg).then_some(v)
}

/// A tuple of non-negative ints.
fn dims(v: &Value, what: &str) -> Result<Vec<u64>, PickleError> {
    let Value::Tuple(t) = v else {
        return Err(format!("tensor {what} is a {}, not a tuple", v.kind()));
    };
    t.0.iter()
        .map(|x| x.int().and_then(|n| u64::try_from(n).ok()).ok_or_else(|| format!("tensor {what} holds a non-integer or negative value")))
        .collect()
}

/// `_rebuild_tensor_v2/v3(storage, offset, size, stride, …)`.
fn rebuild_tensor(g: Global, args: &[Value]) -> Result<Value, PickleError> {
    if args.len() < 4 {
        return Err(format!("{g:?} with {} arguments", args.len()));
    }
    let storage = match &args[0] {
        Value::Storage(s) => s.clone(),
        other => return Err(format!("tensor storage is a {}", other.kind())),
    };
    let offset = args[1].int().and_then(|n| u64::try_from(n).ok()).ok_or("tensor storage offset is not a non-negative int")?;
    let shape = dims(&args[2], "size")?;
    let stride = dims(&args[3], "stride")?;
    if shape.len() != stride.len() {
        return Err(format!("tensor has {} sizes but {} strides", shape.len(), stride.len()));
    }
    let mut dtype = storage.dtype;
    if g == Global::RebuildTensorV3 {
        match args.get(6) {
            Some(Value::Global(Global::Dtype(d))) => dtype = *d,
            _ => return Err("_rebuild_tensor_v3 without a known dtype".into()),
        }
    }
    Ok(Value::Tensor(Rc::new(TensorRef { storage, dtype, offset, shape, stride })))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `cargo fuzz run pickle` (a LeakSanitizer report): a dict or list inserted into
    /// itself made an `Rc` cycle that outlived the unpickled value.
    #[test]
    fn self_containing_containers_are_freed() {
        // `{}` memoised, then `d[d] = d` (SETITEM); `[]` memoised, then `l.append(l)`.
        for pickle in [&b"\x80\x02}q\x00h\x00h\x00s."[..], &b"\x80\x02]q\x00h\x00a."[..]] {
            let up = unpickle(pickle, PidStyle::Zip).expect("valid pickle");
            let weak = match &up.value {
                Value::Dict(c) | Value::List(c) => Rc::downgrade(c),
                other => panic!("unexpected {}", other.kind()),
            };
            drop(up);
            assert!(weak.upgrade().is_none(), "cycle leaked");
        }
        // The same cycle in a pickle that then fails.
        let failing = b"\x80\x02]q\x00h\x00a\xff";
        assert!(unpickle(failing, PidStyle::Zip).is_err());
    }
}
