package dev.kestrel

import android.graphics.Bitmap
import java.io.Closeable
import java.nio.ByteBuffer
import java.util.concurrent.locks.ReentrantReadWriteLock
import kotlin.concurrent.read
import kotlin.concurrent.write
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.flow.channelFlow
import kotlinx.coroutines.flow.flowOn
import kotlinx.coroutines.withContext
import org.json.JSONArray
import org.json.JSONObject

/** The layout of one pixel in a raw image buffer. */
enum class PixelFormat(internal val code: Int) {
    /** R, G, B, A: one byte each (a Bitmap.Config.ARGB_8888 bitmap's bytes); alpha is ignored. */
    RGBA8(0),

    /** R, G, B: one byte each. */
    RGB8(1),
}

/** One class of a classification. */
data class ClassScore(val index: Int, val label: String, val prob: Double)

/** The most probable classes, most probable first, and the time of the forward pass. */
data class Classification(val top: List<ClassScore>, val ms: Double, val json: String) {
    internal companion object {
        fun parse(json: String): Classification {
            val o = JSONObject(json)
            val top = o.getJSONArray("top")
            val scores = (0 until top.length()).map {
                val c = top.getJSONObject(it)
                ClassScore(c.getInt("index"), c.getString("label"), c.getDouble("prob"))
            }
            return Classification(scores, o.getDouble("ms"), json)
        }
    }
}

/**
 * A generation request; null fields take the library's defaults (max_tokens 256, temperature
 * 0.8 — 0 is greedy —, top_k 40, top_p 0.95, min_p 0.05, repeat_penalty 1, seed 0).
 */
data class GenerateRequest(
    /** The prompt, tokenized as given (or rendered with the chat template when [chat]). */
    val prompt: String,
    /** Render [prompt] as a user turn with the model's chat template. */
    val chat: Boolean = false,
    /** A system turn for the chat template. */
    val system: String? = null,
    val maxTokens: Int? = null,
    val temperature: Double? = null,
    val topK: Int? = null,
    val topP: Double? = null,
    val minP: Double? = null,
    val repeatPenalty: Double? = null,
    val seed: Long? = null,
    /** Strings that end generation (not included in the text). */
    val stop: List<String> = emptyList(),
) {
    /** The C ABI's request JSON. */
    fun toJson(): String = JSONObject().apply {
        put("prompt", prompt)
        if (chat) put("chat", true)
        system?.let { put("system", it) }
        maxTokens?.let { put("max_tokens", it) }
        temperature?.let { put("temperature", it) }
        topK?.let { put("top_k", it) }
        topP?.let { put("top_p", it) }
        minP?.let { put("min_p", it) }
        repeatPenalty?.let { put("repeat_penalty", it) }
        seed?.let { put("seed", it) }
        if (stop.isNotEmpty()) put("stop", JSONArray(stop))
    }.toString()
}

/** A finished generation: the text, token counts and speeds, and why it ended. */
data class GenerateResult(
    val text: String,
    val tokens: Int,
    val promptTokens: Int,
    val prefillTokPerS: Double,
    val decodeTokPerS: Double,
    /** "eos", "stop", "length", "context" or "cancelled". */
    val finish: String,
    /** The whole result JSON (also peak_gpu_bytes, weight_bytes...). */
    val json: String,
) {
    internal companion object {
        fun parse(json: String): GenerateResult {
            val o = JSONObject(json)
            return GenerateResult(
                o.getString("text"), o.getInt("tokens"), o.getInt("prompt_tokens"),
                o.optDouble("prefill_tok_s"), o.optDouble("decode_tok_s"), o.getString("finish"), json,
            )
        }
    }
}

/** The on-device profile of a model: latency percentiles, peak GPU memory, the per-op JSON. */
data class ProfileReport(
    val p50Ms: Double,
    val p90Ms: Double,
    val peakGpuBytes: Long,
    /** The profiler's whole JSON: "ops" (per-op table), "gpu_ms", "timing", "trace" events... */
    val json: String,
) {
    internal companion object {
        fun parse(json: String): ProfileReport {
            val o = JSONObject(json)
            val latency = o.getJSONObject("latency_ms")
            return ProfileReport(latency.getDouble("p50"), latency.getDouble("p90"), o.getLong("peak_gpu_bytes"), json)
        }
    }
}

/**
 * A Kestrel model on this device's GPU: an image classifier (SLAB) or a text generator (GGUF,
 * Hugging Face directory, Kestrel file). Every call runs off the main thread (Dispatchers.IO:
 * the calls block while the GPU works); calls on one model are serialised, different models
 * run at once. Failures throw [KestrelException] with the C ABI's status and message.
 * [close] releases the GPU memory; a model whose device was lost (KestrelException.DEVICE_LOST)
 * is closed and loaded again.
 */
class Kestrel private constructor(handle: Long) : Closeable {
    /** The C handle; 0 once closed. Calls hold the read lock, [close] the write lock. */
    @Volatile
    private var handle: Long = handle
    private val calls = ReentrantReadWriteLock()
    private val closing = Any()

    companion object {
        /** The C ABI version of the native library. */
        @JvmStatic
        val abiVersion: Int
            get() = NativeBridge.abiVersion()

        /**
         * Loads the model at [path] on its own GPU context. [options]: null or the C ABI's model
         * options JSON ({"kind", "quant", "arch", "top", "context"}); [runtimeOptions]: null or
         * {"backend", "adapter", "cache_dir", "weight_textures"} (the pipeline cache directory
         * is only used when given, e.g. context.cacheDir).
         */
        @JvmStatic
        suspend fun load(path: String, options: String? = null, runtimeOptions: String? = null): Kestrel =
            withContext(Dispatchers.IO) {
                val runtime = NativeBridge.runtimeCreate(runtimeOptions)
                try {
                    // The model keeps the GPU context alive; the runtime handle is not needed.
                    Kestrel(NativeBridge.modelLoad(runtime, path, options))
                } finally {
                    NativeBridge.runtimeFree(runtime)
                }
            }
    }

    private fun <T> call(block: (Long) -> T): T = calls.read {
        val h = handle
        check(h != 0L) { "this Kestrel model is closed" }
        block(h)
    }

    /**
     * Classifies [bitmap] (converted to ARGB_8888 when it is in another configuration; the
     * image goes through the model's own resize and crop).
     */
    suspend fun classify(bitmap: Bitmap): Classification = withContext(Dispatchers.IO) {
        val argb = if (bitmap.config == Bitmap.Config.ARGB_8888) bitmap else bitmap.copy(Bitmap.Config.ARGB_8888, false)
        val pixels = ByteBuffer.allocateDirect(argb.rowBytes * argb.height)
        argb.copyPixelsToBuffer(pixels)
        if (argb !== bitmap) argb.recycle()
        Classification.parse(call { NativeBridge.classify(it, pixels, argb.width, argb.height, argb.rowBytes, PixelFormat.RGBA8.code) })
    }

    /**
     * Classifies raw pixels (a camera frame converted to RGBA, say): [height] rows of [width]
     * pixels, [stride] bytes apart, from the start of the direct buffer [pixels].
     */
    suspend fun classify(pixels: ByteBuffer, width: Int, height: Int, stride: Int, format: PixelFormat = PixelFormat.RGBA8): Classification =
        withContext(Dispatchers.IO) {
            Classification.parse(call { NativeBridge.classify(it, pixels, width, height, stride, format.code) })
        }

    /**
     * Streams the text generated for [request], piece by piece (whole characters; the pieces
     * concatenate to the text). The model runs on Dispatchers.IO; cancelling the collector stops
     * generation at the next token. Each call starts from an empty KV cache.
     */
    fun generate(request: GenerateRequest): Flow<String> = channelFlow {
        val json = request.toJson()
        // A collector that goes away closes the channel: stop the native call at its next token
        // (trySend then fails too, which also stops it).
        channel.invokeOnClose { this@Kestrel.cancel() }
        call { h -> NativeBridge.generate(h, json) { piece -> trySend(piece).isSuccess } }
    }.buffer(Channel.UNLIMITED).flowOn(Dispatchers.IO)

    /**
     * Generates the whole answer to [request], handing each piece to [onPiece] (on the worker
     * thread) when given; returns the text with its token counts, speeds and finish reason.
     */
    suspend fun generateResult(request: GenerateRequest, onPiece: ((String) -> Boolean)? = null): GenerateResult =
        withContext(Dispatchers.IO) {
            val json = request.toJson()
            GenerateResult.parse(call { h -> NativeBridge.generate(h, json, onPiece?.let { f -> TokenCallback { f(it) } }) })
        }

    /**
     * Profiles the model on this device: [iters] timed runs of a classifier's forward pass or a
     * generator's decode step, with the per-op table and (when [trace]) Chrome trace events.
     */
    suspend fun profile(iters: Int = 5, trace: Boolean = false): ProfileReport = withContext(Dispatchers.IO) {
        val request = JSONObject().put("iters", iters).put("trace", trace).toString()
        ProfileReport.parse(call { NativeBridge.profile(it, request) })
    }

    /** Stops the running generation or profile at its next token (it then throws CANCELLED). */
    fun cancel() {
        synchronized(closing) {
            val h = handle
            if (h != 0L) NativeBridge.modelCancel(h)
        }
    }

    /** Stops a running call, waits for it, and frees the model. Idempotent. */
    override fun close() {
        synchronized(closing) {
            val h = handle
            if (h == 0L) return
            NativeBridge.modelCancel(h)
            calls.write {
                handle = 0L
                NativeBridge.modelFree(h)
            }
        }
    }
}
