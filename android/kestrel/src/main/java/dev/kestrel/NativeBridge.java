package dev.kestrel;

import java.nio.ByteBuffer;

/**
 * The native methods of libkestrel_jni.so (android/jni, Rust): one per function of Kestrel's C
 * ABI (capi/include/kestrel.h), with its status codes, messages and JSON. Handles are the C
 * pointers as longs (0 = NULL). Every failure throws {@link KestrelException}. The Kotlin class
 * {@code Kestrel} is the API apps use; this class is internal to the library.
 */
final class NativeBridge {
    static {
        System.loadLibrary("kestrel_jni");
    }

    private NativeBridge() {}

    /** The library's C ABI version (KESTREL_ABI_VERSION, 1). */
    static native int abiVersion();

    /** Opens a GPU context; {@code optionsJson} null or {"backend", "adapter", "cache_dir", ...}. */
    static native long runtimeCreate(String optionsJson);

    /** Frees a runtime (0 is ignored); its models stay usable until freed. */
    static native void runtimeFree(long runtime);

    /** Loads a model file or directory; {@code optionsJson} null or {"kind", "quant", "arch", "top", "context"}. */
    static native long modelLoad(long runtime, String path, String optionsJson);

    /** Frees a model (0 is ignored); not while another thread is inside a call on it. */
    static native void modelFree(long model);

    /** Stops the model's running generate or profile call at its next token (any thread). */
    static native void modelCancel(long model);

    /**
     * Classifies the image at the start of a direct buffer: {@code height} rows {@code stride}
     * bytes apart, {@code format} 0 = RGBA8, 1 = RGB8. Returns {"top": [{"index", "label", "prob"}], "ms"}.
     */
    static native String classify(long model, ByteBuffer pixels, int width, int height, int stride, int format);

    /**
     * Generates from a request ({"prompt", "max_tokens", "temperature", "chat", ...}), streaming
     * whole-UTF-8 pieces to {@code callback} (may be null) on this thread. Returns the result
     * JSON ({"text", "tokens", ..., "finish"}).
     */
    static native String generate(long model, String requestJson, TokenCallback callback);

    /** Profiles the model ({"iters", "trace"}, or null); returns the profiler's JSON. */
    static native String profile(long model, String requestJson);
}
