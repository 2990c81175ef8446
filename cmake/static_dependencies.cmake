# Included by the GPU-only build, whose test binary is built here and carried to a GPU machine
# that has none of our Debian packages (scripts/stage_gpu.sh stages it). So it links statically
# what it can: absl and OpenBLAS from the archives Debian ships beside their shared libraries
# (GoogleTest's are archives already), and spdlog and fmt compiled from their headers (Debian
# ships those two as shared libraries only). Where an archive is missing, the shared library stays.
#
# What stays shared: glibc; libgomp (OpenMP's runtime), which the stage carries; the CUDA
# libraries; and libstdc++ and libgcc_s, which every Debian or Ubuntu system has (apt needs them).
# Those two are the GPU machine's own on purpose: Debian 12's libstdc++.a calls arc4random and its
# libgcc_eh.a _dl_find_object, so a binary linked with -static-libstdc++ -static-libgcc (and
# Debian's shared copies too) would need glibc 2.36 (Ubuntu 22.04 has 2.35); linked against the
# system's, the binary needed glibc 2.34 and GLIBCXX 3.4.29 (GCC 11), which Ubuntu 22.04 and later
# provide. scripts/stage_gpu.sh records both in the stage's MANIFEST.

# ARCHIVE_VAR <- the archive beside a shared library path (libx.so[.version] -> libx.a), or "".
function(gs_archive_beside shared_path archive_var)
  string(REGEX REPLACE "\\.so(\\.[0-9.]+)?$" ".a" archive "${shared_path}")
  if(archive STREQUAL shared_path OR NOT EXISTS "${archive}")
    set(archive "")
  endif()
  set(${archive_var} "${archive}" PARENT_SCOPE)
endfunction()

# absl: every imported absl:: library points at libabsl_*.so.<version>.
get_property(gs_imported_targets DIRECTORY PROPERTY IMPORTED_TARGETS)
set(gs_num_static_absl 0)
foreach(target IN LISTS gs_imported_targets)
  get_target_property(type ${target} TYPE)
  if(NOT target MATCHES "^absl::" OR NOT type STREQUAL "SHARED_LIBRARY")
    continue()
  endif()
  get_target_property(configs ${target} IMPORTED_CONFIGURATIONS)
  foreach(config IN LISTS configs)
    get_target_property(location ${target} IMPORTED_LOCATION_${config})
    gs_archive_beside("${location}" archive)
    if(archive)
      set_target_properties(${target} PROPERTIES IMPORTED_LOCATION_${config} "${archive}")
      math(EXPR gs_num_static_absl "${gs_num_static_absl} + 1")
    endif()
  endforeach()
endforeach()

# OpenBLAS: the linker takes only the BLAS objects ops/ calls, none of which needs libgfortran
# (OpenBLAS's LAPACK would: a call into it fails to link with undefined _gfortran_* symbols).
gs_archive_beside("${OpenBLAS_LIBRARIES}" gs_openblas_archive)
if(gs_openblas_archive)
  set_property(TARGET openblas_lib PROPERTY INTERFACE_LINK_LIBRARIES
    "${gs_openblas_archive}" OpenMP::OpenMP_CXX)
endif()

# spdlog and fmt from their headers (spdlog with fmt as its external formatter, as Debian's is).
get_target_property(gs_spdlog_includes spdlog::spdlog_header_only INTERFACE_INCLUDE_DIRECTORIES)
target_include_directories(spdlog_lib SYSTEM INTERFACE ${gs_spdlog_includes})
target_compile_definitions(spdlog_lib INTERFACE SPDLOG_FMT_EXTERNAL)
target_link_libraries(spdlog_lib INTERFACE fmt::fmt-header-only Threads::Threads)

message(STATUS "gemmaserve: GPU-only build; static absl (${gs_num_static_absl} libraries), "
               "OpenBLAS ${gs_openblas_archive}; spdlog and fmt from headers")
