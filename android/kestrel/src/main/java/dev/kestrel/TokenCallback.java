package dev.kestrel;

/** Receives generated text piece by piece, on the thread that called generate. */
@FunctionalInterface
public interface TokenCallback {
    /**
     * One piece of text: whole UTF-8 characters; the pieces concatenate to the result's text.
     *
     * @return true to go on, false to stop generation here (the result's finish is "cancelled")
     */
    boolean onToken(String piece);
}
