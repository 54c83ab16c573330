"""HDF5 errors in one line."""

__all__ = ["hdf5_error_message"]


def hdf5_error_message(error):
    """One line for a PyTables/HDF5 error: the innermost cause of HDF5's C back-trace (e.g.
    ``truncated file: eof = 1000000, sblock->base_addr = 0, stored_eof = 2746674``), not the
    trace itself."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if "HDF5 error back trace" not in lines[0]:
        return lines[0]
    # outermost call first: the last message inside the trace is the cause
    inside = lines[1:lines.index("End of HDF5 error back trace")] if (
        "End of HDF5 error back trace" in lines) else lines[1:]
    causes = [line for line in inside if not line.startswith('File "')]
    return causes[-1] if causes else lines[-1]
