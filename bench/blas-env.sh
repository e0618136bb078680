# Sourced by the bench scripts (after make): the PyTorch peer gets the OpenBLAS kernels dap
# runs. Debian's PyTorch does its matmuls in the same OpenBLAS library as dap; where that
# library falls back to generic kernels on a CPU it does not know, dap restarts itself with
# OPENBLAS_CORETYPE set (src/core/blas.h), and the peer must get the same setting or the
# ratio measures the library's CPU detection instead of the two programs.
if [ -z "${OPENBLAS_CORETYPE:-}" ] && [ -x build/dap ]; then
  blas_core=$(build/dap --version | sed -n 's/.*OPENBLAS_CORETYPE=\([A-Za-z0-9]*\) set by dap.*/\1/p')
  [ -n "$blas_core" ] && export OPENBLAS_CORETYPE=$blas_core
fi
[ -x build/dap ] && echo "bench: OpenBLAS, both sides: $(build/dap --version | sed -n 's/^BLAS: //p')" >&2
true
