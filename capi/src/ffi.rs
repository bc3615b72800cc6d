//! The exported functions and types; their doc comments are the header's documentation.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kestrel_models::ModelError;
use kestrel_models::api::{CancelFlag, GenerateRequest, ImageView, Model, ModelOptions, PixelFormat, ProfileRequest, RuntimeOptions};
use kestrel_models::kestrel::{Context, KestrelError};

/// The ABI version this header describes; kestrel_abi_version() returns the library's.
pub const KESTREL_ABI_VERSION: u32 = 1;

/// What a call returned. KESTREL_OK is 0; every other value comes with a message from
/// kestrel_last_error().
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum kestrel_status {
    /// Success.
    KESTREL_OK = 0,
    /// A required pointer was NULL, or an argument, option or request is malformed (bad JSON,
    /// unknown key, zero-size image, stride shorter than a row, empty prompt…), or a model
    /// was re-entered from its own callback.
    KESTREL_ERR_INVALID_ARGUMENT,
    /// A file could not be read.
    KESTREL_ERR_IO,
    /// A file is not a model Kestrel reads (corrupt, truncated, wrong architecture, bad
    /// tokenizer or template).
    KESTREL_ERR_FORMAT,
    /// The model cannot do this (classifying with a text generator, an image for a text-only
    /// model).
    KESTREL_ERR_UNSUPPORTED,
    /// The GPU failed (no adapter, device creation, shader compilation, validation).
    KESTREL_ERR_GPU,
    /// The GPU device was lost. Sticky: every later call on the runtime and its models
    /// returns it until the runtime is freed and created again.
    KESTREL_ERR_DEVICE_LOST,
    /// GPU or host memory ran out, or an allocation exceeds the device's limits.
    KESTREL_ERR_OUT_OF_MEMORY,
    /// kestrel_model_cancel() stopped the call.
    KESTREL_ERR_CANCELLED,
    /// A bug in Kestrel (including a caught panic).
    KESTREL_ERR_INTERNAL,
}

use kestrel_status::*;

/// Layout of one pixel of a kestrel_image.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum kestrel_pixel_format {
    /// R, G, B, A: one byte each; alpha is ignored.
    KESTREL_PIXEL_RGBA8 = 0,
    /// R, G, B: one byte each.
    KESTREL_PIXEL_RGB8 = 1,
}

/// An 8-bit image the caller owns: height rows of width pixels, top to bottom, each row
/// starting stride bytes after the previous one (stride >= width * bytes per pixel; the last
/// row needs no padding). Kestrel reads it only during the call it is passed to.
#[repr(C)]
pub struct kestrel_image {
    /// The first byte of the first row.
    pub data: *const u8,
    /// Width in pixels (> 0).
    pub width: u32,
    /// Height in pixels (> 0).
    pub height: u32,
    /// Bytes from the start of one row to the start of the next.
    pub stride: u32,
    /// Layout of a pixel.
    pub format: kestrel_pixel_format,
}

/// A GPU context: one adapter and device, shared by the models loaded on it. Thread-safe:
/// models may be loaded on it from several threads at once.
pub struct kestrel_runtime {
    ctx: Arc<Context>,
    lost: Arc<AtomicBool>,
}

/// A loaded model (an image classifier or a text generator). Calls on one model are
/// serialised (a second thread waits); different models run concurrently. A model keeps its
/// runtime's GPU context alive.
pub struct kestrel_model {
    model: Mutex<Model>,
    cancel: CancelFlag,
    lost: Arc<AtomicBool>,
    /// The id of the thread inside a call on this model (0: none), to refuse re-entry from
    /// a callback instead of deadlocking.
    owner: AtomicU64,
}

/// Called with each piece of generated text: whole UTF-8 characters, NUL-terminated, valid
/// only during the call; the pieces concatenate to the result's "text". Runs on the thread
/// that called kestrel_generate. Return 0 to continue, non-zero to stop generation there
/// (the result's "finish" is then "cancelled"). It must not call functions on the same model
/// except kestrel_model_cancel (they fail with KESTREL_ERR_INVALID_ARGUMENT).
pub type kestrel_token_fn = Option<unsafe extern "C" fn(utf8_piece: *const c_char, user_data: *mut c_void) -> c_int>;

thread_local! {
    /// This thread's last error message.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
    /// A process-unique id of this thread (never 0).
    static THREAD_ID: u64 = {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    };
}

/// A failed call: its status and message.
struct Failure {
    status: kestrel_status,
    message: String,
}

impl Failure {
    fn new(status: kestrel_status, message: impl Into<String>) -> Failure {
        Failure { status, message: message.into() }
    }

    fn null(what: &str) -> Failure {
        Failure::new(KESTREL_ERR_INVALID_ARGUMENT, format!("{what} is NULL"))
    }
}

impl From<ModelError> for Failure {
    fn from(e: ModelError) -> Failure {
        let status = match &e {
            ModelError::Runtime(r) => runtime_status(r),
            ModelError::Checkpoint { .. }
            | ModelError::Config(_)
            | ModelError::ImageDecode(_)
            | ModelError::Npy { .. }
            | ModelError::Tokenizer(_)
            | ModelError::Template(_) => KESTREL_ERR_FORMAT,
            ModelError::Input(_) | ModelError::ImageTooLarge { .. } | ModelError::ContextFull { .. } => KESTREL_ERR_INVALID_ARGUMENT,
            ModelError::Io { .. } => KESTREL_ERR_IO,
            ModelError::Unsupported(_) => KESTREL_ERR_UNSUPPORTED,
            ModelError::Cancelled => KESTREL_ERR_CANCELLED,
            _ => KESTREL_ERR_INTERNAL,
        };
        Failure::new(status, e.to_string())
    }
}

/// The status of a runtime error.
fn runtime_status(e: &KestrelError) -> kestrel_status {
    match e {
        KestrelError::Gpu(m) | KestrelError::Readback(m) | KestrelError::RequestDevice(m) => {
            let m = m.to_ascii_lowercase();
            if m.contains("lost") {
                KESTREL_ERR_DEVICE_LOST
            } else if m.contains("out of memory") {
                KESTREL_ERR_OUT_OF_MEMORY
            } else {
                KESTREL_ERR_GPU
            }
        }
        KestrelError::BufferTooLarge { .. } => KESTREL_ERR_OUT_OF_MEMORY,
        KestrelError::NoAdapter { .. } | KestrelError::Shader { .. } => KESTREL_ERR_GPU,
        KestrelError::Weights { .. } => KESTREL_ERR_FORMAT,
        KestrelError::InvalidArgument { .. } | KestrelError::Shape { .. } | KestrelError::DataLength { .. } => KESTREL_ERR_INVALID_ARGUMENT,
        _ => KESTREL_ERR_INTERNAL,
    }
}

fn set_last_error(message: &str) {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
}

/// Runs one entry point: clears the thread's last error, catches panics, records a failure.
fn entry(f: impl FnOnce() -> Result<(), Failure>) -> kestrel_status {
    set_last_error("");
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => KESTREL_OK,
        Ok(Err(fail)) => {
            set_last_error(&fail.message);
            fail.status
        }
        Err(panic) => {
            let what = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
            set_last_error(&format!("internal error: {}", what.unwrap_or_else(|| "panic".into())));
            KESTREL_ERR_INTERNAL
        }
    }
}

/// Clears an out-parameter (when it is not NULL) so that it is NULL on every failure.
///
/// # Safety
/// `out` is NULL or valid for a write.
unsafe fn clear_out<T>(out: *mut *mut T) {
    if !out.is_null() {
        // SAFETY: non-NULL and writable by the caller's contract.
        unsafe { *out = std::ptr::null_mut() };
    }
}

/// A NUL-terminated UTF-8 argument, `None` for NULL.
///
/// # Safety
/// `s` is NULL or a NUL-terminated string valid for the call.
unsafe fn opt_str<'a>(s: *const c_char, what: &str) -> Result<Option<&'a str>, Failure> {
    if s.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    let c = unsafe { CStr::from_ptr(s) };
    c.to_str().map(Some).map_err(|_| Failure::new(KESTREL_ERR_INVALID_ARGUMENT, format!("{what} is not UTF-8")))
}

/// A required NUL-terminated UTF-8 argument.
///
/// # Safety
/// As [`opt_str`].
unsafe fn req_str<'a>(s: *const c_char, what: &str) -> Result<&'a str, Failure> {
    // SAFETY: forwarded contract.
    unsafe { opt_str(s, what) }?.ok_or_else(|| Failure::null(what))
}

/// Hands a JSON value to the caller as a string it frees with kestrel_string_free.
///
/// # Safety
/// `out` is non-NULL and writable.
unsafe fn put_json(out: *mut *mut c_char, value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string(value).map_err(|e| Failure::new(KESTREL_ERR_INTERNAL, format!("result JSON: {e}")))?;
    let c = CString::new(text).map_err(|_| Failure::new(KESTREL_ERR_INTERNAL, "result JSON holds a NUL byte"))?;
    // SAFETY: non-NULL and writable by the caller's contract.
    unsafe { *out = c.into_raw() };
    Ok(())
}

/// Fails with the sticky KESTREL_ERR_DEVICE_LOST once the device was lost.
fn check_lost(lost: &AtomicBool) -> Result<(), Failure> {
    if lost.load(Ordering::SeqCst) {
        Err(Failure::new(KESTREL_ERR_DEVICE_LOST, "the GPU device was lost; free the runtime and its models and create them again"))
    } else {
        Ok(())
    }
}

/// Records a lost device on the runtime's flag.
fn note_lost(lost: &AtomicBool, fail: Failure) -> Failure {
    if fail.status == KESTREL_ERR_DEVICE_LOST {
        lost.store(true, Ordering::SeqCst);
    }
    fail
}

/// Runs `f` on the locked model, refusing re-entry from the thread already inside it.
///
/// # Safety
/// `model` is NULL or a live handle from kestrel_model_load.
unsafe fn with_model(model: *mut kestrel_model, f: impl FnOnce(&mut Model) -> Result<(), Failure>) -> Result<(), Failure> {
    if model.is_null() {
        return Err(Failure::null("model"));
    }
    // SAFETY: a live handle by the caller's contract; only shared access is taken.
    let m = unsafe { &*model };
    check_lost(&m.lost)?;
    let me = THREAD_ID.with(|id| *id);
    if m.owner.load(Ordering::SeqCst) == me {
        return Err(Failure::new(KESTREL_ERR_INVALID_ARGUMENT, "the model was called from its own callback (re-entry is not allowed)"));
    }
    let mut guard =
        m.model.lock().map_err(|_| Failure::new(KESTREL_ERR_INTERNAL, "the model failed in an earlier call and is unusable; free it"))?;
    m.owner.store(me, Ordering::SeqCst);
    let result = f(&mut guard);
    m.owner.store(0, Ordering::SeqCst);
    result.map_err(|fail| note_lost(&m.lost, fail))
}

/// The image a kestrel_image describes.
///
/// # Safety
/// `image` is non-NULL and points to a kestrel_image whose `data` spans the rows it declares.
unsafe fn image_view<'a>(image: *const kestrel_image) -> Result<ImageView<'a>, Failure> {
    // SAFETY: readable by the caller's contract. `format` is read as the integer it is in C,
    // so an out-of-range value is an error instead of an invalid Rust enum.
    let (data, width, height, stride, format) = unsafe {
        let format = std::ptr::addr_of!((*image).format).cast::<u32>().read();
        ((*image).data, (*image).width, (*image).height, (*image).stride, format)
    };
    let format = match format {
        0 => PixelFormat::Rgba8,
        1 => PixelFormat::Rgb8,
        other => return Err(Failure::new(KESTREL_ERR_INVALID_ARGUMENT, format!("unknown pixel format {other}"))),
    };
    if data.is_null() {
        return Err(Failure::null("image->data"));
    }
    let len = ImageView::required_bytes(width, height, stride, format)?;
    // SAFETY: the caller guarantees `len` readable bytes (the rows the image declares).
    let data = unsafe { std::slice::from_raw_parts(data, len) };
    Ok(ImageView { data, width, height, stride, format })
}

/// The ABI version of the loaded library (KESTREL_ABI_VERSION when header and library
/// match). Thread-safe; never fails.
#[unsafe(no_mangle)]
pub extern "C" fn kestrel_abi_version() -> u32 {
    KESTREL_ABI_VERSION
}

/// The message of the calling thread's last failure ("" when its last call succeeded).
/// Thread-local; the string belongs to Kestrel and stays valid until this thread's next
/// kestrel_* call (other than kestrel_last_error). Never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn kestrel_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Opens a GPU context. options_json: NULL or a JSON object with optional "backend"
/// ("vulkan", "metal", "dx12", "gl"; comma-separated), "adapter" (substring of the adapter
/// name), "cache_dir" (pipeline cache directory; without it no file is written),
/// "weight_textures" (bool), "no_f16", "no_subgroups" (bools, testing the fallbacks). No
/// environment variable is read. On success *out is a new runtime the caller frees with
/// kestrel_runtime_free; on failure *out is NULL. Thread-safe.
///
/// # Safety
/// options_json is NULL or a NUL-terminated string; out is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kestrel_runtime_create(options_json: *const c_char, out: *mut *mut kestrel_runtime) -> kestrel_status {
    entry(|| {
        // SAFETY: contracts of this function.
        unsafe { clear_out(out) };
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        // SAFETY: contract of this function.
        let options = RuntimeOptions::from_json(unsafe { opt_str(options_json, "options_json") }?)?;
        let ctx = options.open()?;
        let runtime = Box::new(kestrel_runtime { ctx, lost: Arc::new(AtomicBool::new(false)) });
        // SAFETY: checked non-NULL above.
        unsafe { *out = Box::into_raw(runtime) };
        Ok(())
    })
}

/// Releases a runtime. NULL is ignored. Models loaded on it stay usable (they keep the GPU
/// context alive) until they are freed. Not concurrently with another call on this runtime.
///
/// # Safety
/// runtime is NULL or a handle from kestrel_runtime_create not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kestrel_runtime_free(runtime: *mut kestrel_runtime) {
    if !runtime.is_null() {
        // SAFETY: a live handle from Box::into_raw by the caller's contract; dropping cannot
        // unwind across the boundary (abort on a panic in drop is Rust's own behaviour).
        drop(unsafe { Box::from_raw(runtime) });
    }
}

/// Loads the model at path (UTF-8): a SLAB checkpoint or Kestrel file (an image classifier),
/// a GGUF file, Hugging Face directory or Kestrel LLM file (a text generator). options_json:
/// NULL or a JSON object with optional "kind" ("auto", "classifier", "generator"), "quant"
/// ("f32", "f16", "w8", "w4"; generators also "native"), "arch" (classifier: a built-in
/// name or a SLAB configuration object), "top" (classes per result, default 5), "context"
/// (generator: KV cache positions), "separate_projections" (bool). On success *out is a new
/// model the caller frees with kestrel_model_free; on failure *out is NULL. Thread-safe:
/// several threads may load models on one runtime at once.
///
/// # Safety
/// runtime is NULL or a live handle; path and options_json are NULL or NUL-terminated
/// strings; out is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kestrel_model_load(
    runtime: *mut kestrel_runtime,
    path: *const c_char,
    options_json: *const c_char,
    out: *mut *mut kestrel_model,
) -> kestrel_status {
    entry(|| {
        // SAFETY: contract of this function.
        unsafe { clear_out(out) };
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        if runtime.is_null() {
            return Err(Failure::null("runtime"));
        }
        // SAFETY: a live handle by the caller's contract; shared access only.
        let rt = unsafe { &*runtime };
        check_lost(&rt.lost)?;
        // SAFETY: contract of this function.
        let path = unsafe { req_str(path, "path") }?;
        // SAFETY: contract of this function.
        let options = ModelOptions::from_json(unsafe { opt_str(options_json, "options_json") }?)?;
        let model = Model::open(&rt.ctx, Path::new(path), &options).map_err(|e| note_lost(&rt.lost, e.into()))?;
        let handle = Box::new(kestrel_model {
            cancel: model.cancel_flag(),
            model: Mutex::new(model),
            lost: rt.lost.clone(),
            owner: AtomicU64::new(0),
        });
        // SAFETY: checked non-NULL above.
        unsafe { *out = Box::into_raw(handle) };
        Ok(())
    })
}

/// Releases a model and its GPU memory. NULL is ignored. Not while another thread is inside
/// a call on this model, and not from its callback.
///
/// # Safety
/// model is NULL or a handle from kestrel_model_load not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kestrel_model_free(model: *mut kestrel_model) {
    if !model.is_null() {
        // SAFETY: a live handle from Box::into_raw by the caller's contract.
        drop(unsafe { Box::from_raw(model) });
    }
}

/// Asks the call running on model (kestrel_generate, kestrel_model_profile) to stop at its
/// next token or run; that call then returns KESTREL_ERR_CANCELLED. No effect when none is
/// running (each call starts uncancelled). Thread-safe: meant for another thread, and allowed
/// from the model's own callback. NULL is ignored.
///
/// # Safety
/// model is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kestrel_model_cancel(model: *mut kestrel_model) {
    if !model.is_null() {
        // SAFETY: a live handle by the caller's contract; the flag is atomic.
        unsafe { &*model }.cancel.cancel();
    }
}

/// Classifies image with an image classifier. On success *result_json is
/// {"top": [{"index", "label", "prob"}], "ms"} (as `kestrel classify --json`), owned by the
/// caller (kestrel_string_free); on failure NULL. A text generator gives
/// KESTREL_ERR_UNSUPPORTED; a zero-size image or a stride shorter than a row
/// KESTREL_ERR_INVALID_ARGUMENT. Thread-safe; calls on one model are serialised.
///
/// # Safety
/// model is NULL or a live handle; image is NULL or points to a kestrel_image whose data
/// spans its rows; result_json is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kestrel_classify(
    model: *mut kestrel_model,
    image: *const kestrel_image,
    result_json: *mut *mut c_char,
) -> kestrel_status {
    entry(|| {
        // SAFETY: contract of this function.
        unsafe { clear_out(result_json) };
        if result_json.is_null() {
            return Err(Failure::null("result_json"));
        }
        if image.is_null() {
            return Err(Failure::null("image"));
        }
        // SAFETY: contracts of this function.
        unsafe {
            with_model(model, |m| {
                let Model::Classifier(c) = m else {
                    return Err(Failure::new(KESTREL_ERR_UNSUPPORTED, "this model generates text; it does not classify images"));
                };
                let view = image_view(image)?;
                put_json(result_json, &c.classify(&view)?)
            })
        }
    })
}

/// Generates text with a text generator from request_json: {"prompt": "...", plus optional
/// "chat" (bool: the model's chat template), "system", "max_tokens" (256), "temperature"
/// (0.8; 0 = greedy), "top_k" (40), "top_p" (0.95), "min_p" (0.05), "repeat_penalty" (1),
/// "seed" (0), "stop" (array of strings)}. image must be NULL (no loaded model takes one yet:
/// KESTREL_ERR_UNSUPPORTED). on_token (may be NULL) receives each piece as it is decoded, on
/// this thread, with user_data; returning non-zero stops there. On success *result_json is
/// {"text", "tokens", "prompt_tokens", "prefill_tok_s", "decode_tok_s", "weight_bytes",
/// "decode_weight_gbps", "peak_gpu_bytes", "load_peak_gpu_bytes", "finish"} (as `kestrel
/// generate --json`, plus "finish": "eos", "stop", "length", "context" or "cancelled"),
/// owned by the caller; on failure NULL. kestrel_model_cancel from another thread ends the
/// call with KESTREL_ERR_CANCELLED. Each call starts from an empty KV cache. Thread-safe;
/// calls on one model are serialised; re-entry from on_token fails.
///
/// # Safety
/// model is NULL or a live handle; request_json is NULL or NUL-terminated; image is NULL or a
/// valid kestrel_image; on_token, when not NULL, is safe to call with user_data;
/// result_json is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kestrel_generate(
    model: *mut kestrel_model,
    request_json: *const c_char,
    image: *const kestrel_image,
    on_token: kestrel_token_fn,
    user_data: *mut c_void,
    result_json: *mut *mut c_char,
) -> kestrel_status {
    entry(|| {
        // SAFETY: contract of this function.
        unsafe { clear_out(result_json) };
        if result_json.is_null() {
            return Err(Failure::null("result_json"));
        }
        // SAFETY: contract of this function.
        let request = GenerateRequest::from_json(unsafe { req_str(request_json, "request_json") }?)?;
        // SAFETY: contracts of this function.
        unsafe {
            with_model(model, |m| {
                let Model::Generator(g) = m else {
                    return Err(Failure::new(KESTREL_ERR_UNSUPPORTED, "this model classifies images; it does not generate text"));
                };
                if !image.is_null() {
                    return Err(Failure::new(KESTREL_ERR_UNSUPPORTED, "this model is text-only; pass a NULL image"));
                }
                let mut on_piece = |piece: &str| match on_token {
                    None => ControlFlow::Continue(()),
                    Some(f) => {
                        // Text cannot hold an interior NUL in C; such characters are dropped.
                        let c = CString::new(piece.replace('\0', "")).unwrap_or_default();
                        // SAFETY: the caller's callback contract.
                        if f(c.as_ptr(), user_data) != 0 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
                    }
                };
                put_json(result_json, &g.generate(&request, &mut on_piece)?)
            })
        }
    })
}

/// Profiles model on this device: a classifier's forward pass or a generator's decode step.
/// request_json: NULL or {"iters": 5, "trace": true}. On success *result_json is {"model",
/// "adapter", "backend", "iters", "dispatches", "gflop", "latency_ms": {"p50", "p90"},
/// "gpu_ms", "timing", "peak_gpu_bytes", "ops": [{"op", "shape", "calls", "total_ms",
/// "mean_ms", "share", "gflops"}], "trace": [Chrome trace events] or null}, owned by the
/// caller; on failure NULL. Cancellable with kestrel_model_cancel. Thread-safe; calls on one
/// model are serialised.
///
/// # Safety
/// model is NULL or a live handle; request_json is NULL or NUL-terminated; result_json is
/// NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kestrel_model_profile(
    model: *mut kestrel_model,
    request_json: *const c_char,
    result_json: *mut *mut c_char,
) -> kestrel_status {
    entry(|| {
        // SAFETY: contract of this function.
        unsafe { clear_out(result_json) };
        if result_json.is_null() {
            return Err(Failure::null("result_json"));
        }
        // SAFETY: contract of this function.
        let request = ProfileRequest::from_json(unsafe { opt_str(request_json, "request_json") }?)?;
        // SAFETY: contracts of this function.
        unsafe { with_model(model, |m| put_json(result_json, &m.profile(&request)?)) }
    })
}

/// Releases a string Kestrel returned (a result_json). NULL is ignored. Thread-safe (any
/// thread may free any result, once).
///
/// # Safety
/// s is NULL or a string from a kestrel_* result not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kestrel_string_free(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: made by CString::into_raw in put_json, by the caller's contract.
        drop(unsafe { CString::from_raw(s) });
    }
}
