package dev.kestrel;

/** A failed Kestrel call: the C ABI's status and the message of kestrel_last_error(). */
public class KestrelException extends RuntimeException {
    /** A required argument was missing or malformed (bad JSON, zero-size image, short buffer...). */
    public static final int INVALID_ARGUMENT = 1;
    /** A file could not be read. */
    public static final int IO = 2;
    /** A file is not a model Kestrel reads. */
    public static final int FORMAT = 3;
    /** The model cannot do this (classifying with a text generator...). */
    public static final int UNSUPPORTED = 4;
    /** The GPU failed (no adapter, device creation, shader compilation, validation). */
    public static final int GPU = 5;
    /** The GPU device was lost; close every model and load them again. */
    public static final int DEVICE_LOST = 6;
    /** GPU or host memory ran out. */
    public static final int OUT_OF_MEMORY = 7;
    /** The call was cancelled. */
    public static final int CANCELLED = 8;
    /** A bug in Kestrel. */
    public static final int INTERNAL = 9;

    private static final long serialVersionUID = 1L;

    /** The kestrel_status value (one of the constants above). */
    public final int status;

    /** Called by libkestrel_jni.so with the C status and message. */
    public KestrelException(int status, String message) {
        super(message);
        this.status = status;
    }
}
