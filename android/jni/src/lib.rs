//! # Kestrel's JNI layer
//!
//! The native methods of `dev.kestrel.NativeBridge` (the Java class under the Kotlin API of
//! `android/kestrel`), built as `libkestrel_jni.so`. Each method is a thin adapter over the C
//! ABI of `kestrel-capi` — the same `kestrel_*` functions C and Swift apps call — so status
//! codes, messages, JSON keys, locking, cancellation and the sticky lost device are the C ABI's.
//! What this layer adds is the Java side of the boundary:
//!
//! - handles are Java `long`s (0 is the C ABI's NULL: an `INVALID_ARGUMENT` exception);
//! - every failure throws `dev.kestrel.KestrelException(status, message)` with the C status
//!   and `kestrel_last_error()`; a panic in this layer becomes `KESTREL_ERR_INTERNAL`;
//! - pixels come in a direct `java.nio.ByteBuffer` whose capacity is checked against the
//!   rows the image declares (the C ABI must trust its caller on that);
//! - streamed pieces go to a `dev.kestrel.TokenCallback` (`boolean onToken(String)`: `false`
//!   stops); an exception the callback throws stops generation and reaches the caller.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;

use jni::JNIEnv;
use jni::objects::{JByteBuffer, JClass, JObject, JString, JThrowable, JValue};
use jni::sys::{jint, jlong, jstring};
use kestrel_capi::kestrel_pixel_format::{KESTREL_PIXEL_RGB8, KESTREL_PIXEL_RGBA8};
use kestrel_capi::kestrel_status::{self, KESTREL_ERR_INTERNAL, KESTREL_ERR_INVALID_ARGUMENT, KESTREL_OK};
use kestrel_capi::{kestrel_image, kestrel_model, kestrel_runtime};
use kestrel_models::api::{ImageView, PixelFormat};

/// The Java exception every failure throws: `KestrelException(int status, String message)`.
const EXCEPTION_CLASS: &str = "dev/kestrel/KestrelException";

/// Why a native method failed.
enum Fail {
    /// A Kestrel failure: thrown as a `KestrelException`.
    Status(kestrel_status, String),
    /// A Java exception is already pending (thrown by a callback or by a JNI call); it
    /// propagates as it is.
    Pending,
}

impl From<jni::errors::Error> for Fail {
    fn from(e: jni::errors::Error) -> Fail {
        match e {
            jni::errors::Error::JavaException => Fail::Pending,
            other => Fail::Status(KESTREL_ERR_INTERNAL, format!("JNI: {other}")),
        }
    }
}

fn invalid(message: impl Into<String>) -> Fail {
    Fail::Status(KESTREL_ERR_INVALID_ARGUMENT, message.into())
}

/// The calling thread's last C ABI error message.
fn last_error() -> String {
    // SAFETY: kestrel_last_error never returns NULL and the string stays valid until this
    // thread's next kestrel_* call; it is copied at once.
    unsafe { CStr::from_ptr(kestrel_capi::kestrel_last_error()) }.to_string_lossy().into_owned()
}

/// `Ok` for `KESTREL_OK`, else the status with this thread's last error.
fn check(status: kestrel_status) -> Result<(), Fail> {
    if status == KESTREL_OK { Ok(()) } else { Err(Fail::Status(status, last_error())) }
}

/// Throws `fail` into Java unless an exception is already pending.
fn throw(env: &mut JNIEnv, fail: Fail) {
    if env.exception_check().unwrap_or(true) {
        return;
    }
    let (status, message) = match fail {
        Fail::Status(status, message) => (status, message),
        Fail::Pending => (KESTREL_ERR_INTERNAL, "a JNI call failed without a Java exception".to_string()),
    };
    let Ok(text) = env.new_string(&message) else { return };
    let args = [JValue::Int(status as jint), JValue::Object(&text)];
    // A failure here leaves its own exception (NoClassDefFoundError, OutOfMemoryError) pending.
    if let Ok(exception) = env.new_object(EXCEPTION_CLASS, "(ILjava/lang/String;)V", &args) {
        let _ = env.throw(JThrowable::from(exception));
    }
}

/// Runs a native method's body: a failure or a panic becomes a Java exception and the method
/// returns `default` (which Java never sees, since an exception is pending).
fn run<'local, T>(env: &mut JNIEnv<'local>, default: T, body: impl FnOnce(&mut JNIEnv<'local>) -> Result<T, Fail>) -> T {
    let outcome = catch_unwind(AssertUnwindSafe(|| body(env)));
    match outcome {
        Ok(Ok(value)) => value,
        Ok(Err(fail)) => {
            throw(env, fail);
            default
        }
        Err(panic) => {
            let what = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
            throw(env, Fail::Status(KESTREL_ERR_INTERNAL, format!("internal error: {}", what.unwrap_or_else(|| "panic".into()))));
            default
        }
    }
}

/// A Java string as a C string; `None` for Java's null.
fn c_string(env: &mut JNIEnv, s: &JString, what: &str) -> Result<Option<CString>, Fail> {
    if s.is_null() {
        return Ok(None);
    }
    let text: String = env.get_string(s)?.into();
    CString::new(text).map(Some).map_err(|_| invalid(format!("{what} holds a NUL character")))
}

/// A pointer to a C string, NULL for `None`.
fn c_ptr(s: &Option<CString>) -> *const c_char {
    s.as_ref().map_or(ptr::null(), |s| s.as_ptr())
}

/// A result string of the C ABI as a Java string; the C string is freed either way.
fn take_result(env: &mut JNIEnv, json: *mut c_char) -> Result<jstring, Fail> {
    // SAFETY: a non-NULL result of a successful kestrel_* call, freed exactly once below.
    let text = unsafe { CStr::from_ptr(json) }.to_string_lossy().into_owned();
    // SAFETY: as above.
    unsafe { kestrel_capi::kestrel_string_free(json) };
    Ok(env.new_string(text)?.into_raw())
}

/// A non-negative Java int as `u32`.
fn unsigned(value: jint, what: &str) -> Result<u32, Fail> {
    u32::try_from(value).map_err(|_| invalid(format!("{what} {value} is negative")))
}

/// `NativeBridge.abiVersion()`: the C ABI version of this library (`KESTREL_ABI_VERSION`).
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_kestrel_NativeBridge_abiVersion(_env: JNIEnv, _class: JClass) -> jint {
    kestrel_capi::kestrel_abi_version() as jint
}

/// `NativeBridge.runtimeCreate(String optionsJson)`: `kestrel_runtime_create`; the runtime's
/// handle, freed with `runtimeFree`. `optionsJson` may be null (defaults).
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_kestrel_NativeBridge_runtimeCreate<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    options_json: JString<'local>,
) -> jlong {
    run(&mut env, 0, |env| {
        let options = c_string(env, &options_json, "optionsJson")?;
        let mut runtime: *mut kestrel_runtime = ptr::null_mut();
        // SAFETY: a NUL-terminated string or NULL, and a writable out-pointer.
        check(unsafe { kestrel_capi::kestrel_runtime_create(c_ptr(&options), &mut runtime) })?;
        Ok(runtime as jlong)
    })
}

/// `NativeBridge.runtimeFree(long runtime)`: `kestrel_runtime_free`; 0 is ignored. The handle
/// must not be used again.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_kestrel_NativeBridge_runtimeFree(_env: JNIEnv, _class: JClass, runtime: jlong) {
    // SAFETY: 0 or a live handle from runtimeCreate (the Kotlin wrapper frees it once).
    unsafe { kestrel_capi::kestrel_runtime_free(runtime as *mut kestrel_runtime) }
}

/// `NativeBridge.modelLoad(long runtime, String path, String optionsJson)`: `kestrel_model_load`;
/// the model's handle, freed with `modelFree`. `optionsJson` may be null.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_kestrel_NativeBridge_modelLoad<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    runtime: jlong,
    path: JString<'local>,
    options_json: JString<'local>,
) -> jlong {
    run(&mut env, 0, |env| {
        let path = c_string(env, &path, "path")?;
        let options = c_string(env, &options_json, "optionsJson")?;
        let mut model: *mut kestrel_model = ptr::null_mut();
        // SAFETY: 0 or a live runtime handle; strings NUL-terminated or NULL; out writable.
        check(unsafe { kestrel_capi::kestrel_model_load(runtime as *mut kestrel_runtime, c_ptr(&path), c_ptr(&options), &mut model) })?;
        Ok(model as jlong)
    })
}

/// `NativeBridge.modelFree(long model)`: `kestrel_model_free`; 0 is ignored. Not while another
/// thread is inside a call on the model.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_kestrel_NativeBridge_modelFree(_env: JNIEnv, _class: JClass, model: jlong) {
    // SAFETY: 0 or a live handle from modelLoad (the Kotlin wrapper frees it once).
    unsafe { kestrel_capi::kestrel_model_free(model as *mut kestrel_model) }
}

/// `NativeBridge.modelCancel(long model)`: `kestrel_model_cancel`, from any thread; the running
/// `generate` or `profile` then throws `KestrelException` with `KESTREL_ERR_CANCELLED`.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_kestrel_NativeBridge_modelCancel(_env: JNIEnv, _class: JClass, model: jlong) {
    // SAFETY: 0 or a live handle; cancelling is thread-safe.
    unsafe { kestrel_capi::kestrel_model_cancel(model as *mut kestrel_model) }
}

/// `NativeBridge.classify(long model, ByteBuffer pixels, int width, int height, int stride,
/// int format)`: `kestrel_classify` on the image that starts at the first byte of the direct
/// buffer `pixels` (its position is ignored); `format` 0 is RGBA8 (`Bitmap.Config.ARGB_8888`'s
/// bytes), 1 RGB8. Returns the result JSON (`{"top": [...], "ms"}`).
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_kestrel_NativeBridge_classify<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    model: jlong,
    pixels: JByteBuffer<'local>,
    width: jint,
    height: jint,
    stride: jint,
    format: jint,
) -> jstring {
    run(&mut env, ptr::null_mut(), |env| {
        if pixels.is_null() {
            return Err(invalid("pixels is null"));
        }
        let (width, height, stride) = (unsigned(width, "width")?, unsigned(height, "height")?, unsigned(stride, "stride")?);
        let (format, pixel) = match format {
            0 => (KESTREL_PIXEL_RGBA8, PixelFormat::Rgba8),
            1 => (KESTREL_PIXEL_RGB8, PixelFormat::Rgb8),
            other => return Err(invalid(format!("unknown pixel format {other}"))),
        };
        let not_direct = |_| invalid("pixels must be a direct ByteBuffer (ByteBuffer.allocateDirect)");
        let data = env.get_direct_buffer_address(&pixels).map_err(not_direct)?;
        let capacity = env.get_direct_buffer_capacity(&pixels).map_err(not_direct)?;
        // The C ABI trusts its caller to pass the bytes the image declares; here the buffer says
        // how many there are. Sizes it rejects (zero sides, short stride) it reports itself.
        if let Ok(needed) = ImageView::required_bytes(width, height, stride, pixel)
            && capacity < needed
        {
            return Err(invalid(format!("pixels hold {capacity} bytes; a {width}x{height} image with stride {stride} needs {needed}")));
        }
        let image = kestrel_image { data, width, height, stride, format };
        let mut json: *mut c_char = ptr::null_mut();
        // SAFETY: 0 or a live model; image spans `capacity` >= the declared bytes, and the
        // direct buffer stays alive (a local reference holds it) during the call.
        check(unsafe { kestrel_capi::kestrel_classify(model as *mut kestrel_model, &image, &mut json) })?;
        take_result(env, json)
    })
}

/// What the token callback needs: the thread's JNI environment and the Java callback.
struct Sink<'a, 'local> {
    env: &'a mut JNIEnv<'local>,
    callback: &'a JObject<'local>,
    /// Set when a Java exception is pending (the callback threw, or a JNI call failed).
    failed: bool,
}

/// The C ABI's token callback: hands a piece to `TokenCallback.onToken`; `false` from Java, an
/// exception or a JNI failure stops generation.
///
/// # Safety
/// `piece` is a NUL-terminated string and `user_data` the `Sink` of the running call, on the
/// thread that made it (kestrel_generate calls back on the caller's thread).
unsafe extern "C" fn on_token(piece: *const c_char, user_data: *mut c_void) -> c_int {
    // SAFETY: the Sink lives on the stack of the native method for the whole generate call.
    let sink = unsafe { &mut *user_data.cast::<Sink>() };
    // SAFETY: NUL-terminated UTF-8 by the C ABI's contract.
    let piece = unsafe { CStr::from_ptr(piece) }.to_string_lossy();
    let Ok(text) = sink.env.new_string(&*piece) else {
        sink.failed = true;
        return 1;
    };
    let answer = sink.env.call_method(sink.callback, "onToken", "(Ljava/lang/String;)Z", &[JValue::Object(&text)]);
    // One local reference per piece would overflow the frame's table on a long generation.
    let _ = sink.env.delete_local_ref(text);
    match answer.and_then(|v| v.z()) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(_) => {
            sink.failed = true;
            1
        }
    }
}

/// `NativeBridge.generate(long model, String requestJson, TokenCallback callback)`:
/// `kestrel_generate` (no image), streaming each whole-UTF-8 piece to `callback` (may be null)
/// on the calling thread; `onToken` returning `false` stops there (`"finish": "cancelled"`).
/// Returns the result JSON (`kestrel generate --json`'s keys plus `finish`). An exception thrown
/// by the callback stops generation and propagates to the caller.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_kestrel_NativeBridge_generate<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    model: jlong,
    request_json: JString<'local>,
    callback: JObject<'local>,
) -> jstring {
    run(&mut env, ptr::null_mut(), |env| {
        let request = c_string(env, &request_json, "requestJson")?;
        let mut json: *mut c_char = ptr::null_mut();
        let (status, failed) = if callback.is_null() {
            // SAFETY: 0 or a live model; a NUL-terminated request or NULL; out writable.
            let status = unsafe {
                kestrel_capi::kestrel_generate(model as *mut kestrel_model, c_ptr(&request), ptr::null(), None, ptr::null_mut(), &mut json)
            };
            (status, false)
        } else {
            let mut sink = Sink { env: &mut *env, callback: &callback, failed: false };
            let user_data = (&raw mut sink).cast::<c_void>();
            // SAFETY: as above; on_token gets the Sink, which outlives the call.
            let status = unsafe {
                kestrel_capi::kestrel_generate(
                    model as *mut kestrel_model,
                    c_ptr(&request),
                    ptr::null(),
                    Some(on_token),
                    user_data,
                    &mut json,
                )
            };
            (status, sink.failed)
        };
        if failed {
            if !json.is_null() {
                // SAFETY: a result string of the call above, freed once.
                unsafe { kestrel_capi::kestrel_string_free(json) };
            }
            return Err(Fail::Pending);
        }
        check(status)?;
        take_result(env, json)
    })
}

/// `NativeBridge.profile(long model, String requestJson)`: `kestrel_model_profile`; `requestJson`
/// may be null (`{"iters": 5, "trace": true}` are the keys). Returns the profiler's JSON.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_kestrel_NativeBridge_profile<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    model: jlong,
    request_json: JString<'local>,
) -> jstring {
    run(&mut env, ptr::null_mut(), |env| {
        let request = c_string(env, &request_json, "requestJson")?;
        let mut json: *mut c_char = ptr::null_mut();
        // SAFETY: 0 or a live model; a NUL-terminated request or NULL; out writable.
        check(unsafe { kestrel_capi::kestrel_model_profile(model as *mut kestrel_model, c_ptr(&request), &mut json) })?;
        take_result(env, json)
    })
}
