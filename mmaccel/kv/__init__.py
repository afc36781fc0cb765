"""Mixed-precision KV cache (in progress): ``quant`` holds the packed low-bit schemes for keys and values."""
