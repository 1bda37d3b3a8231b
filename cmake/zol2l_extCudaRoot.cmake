# zol2l_ext_locate_cuda_toolkit()
#
# A CUDA build of torch makes find_package(Torch) look for the CUDA toolkit (FindCUDA + enable_language(CUDA)),
# even for a CPU-only consumer. FindCUDA guesses the toolkit root from the first nvcc on PATH, which fails when
# that nvcc is a wrapper script outside the toolkit (/usr/local/bin/nvcc here). This macro finds the real root,
# the way setup.py does, and hands it to both FindCUDA (CUDA_TOOLKIT_ROOT_DIR) and FindCUDAToolkit
# (CUDAToolkit_ROOT), and points CMAKE_CUDA_COMPILER at that toolkit's nvcc. Nothing the user set is overridden.
#
# Root, first found: CUDAToolkit_ROOT / CUDA_TOOLKIT_ROOT_DIR (CMake variables), then the environment
# variables CUDAToolkit_ROOT, CUDA_HOME, CUDA_PATH, then the TOP that `nvcc --dryrun` reports (CMAKE_CUDA_COMPILER,
# CUDACXX or nvcc on PATH), then /usr/local/cuda. Sets ZOL2L_EXT_CUDA_ROOT (empty when none was found).
#
# Shared by CMakeLists.txt and the installed zol2l_extConfig.cmake (a macro: it runs in the caller's scope).
macro(zol2l_ext_locate_cuda_toolkit)
  set(ZOL2L_EXT_CUDA_ROOT "")
  foreach(_zol2l_cand IN ITEMS "${CUDAToolkit_ROOT}" "${CUDA_TOOLKIT_ROOT_DIR}" "$ENV{CUDAToolkit_ROOT}"
                              "$ENV{CUDA_HOME}" "$ENV{CUDA_PATH}")
    if(NOT ZOL2L_EXT_CUDA_ROOT AND _zol2l_cand AND IS_DIRECTORY "${_zol2l_cand}")
      set(ZOL2L_EXT_CUDA_ROOT "${_zol2l_cand}")
    endif()
  endforeach()
  if(NOT ZOL2L_EXT_CUDA_ROOT)
    if(CMAKE_CUDA_COMPILER AND EXISTS "${CMAKE_CUDA_COMPILER}")
      set(_zol2l_nvcc "${CMAKE_CUDA_COMPILER}")
    elseif(DEFINED ENV{CUDACXX} AND EXISTS "$ENV{CUDACXX}")
      set(_zol2l_nvcc "$ENV{CUDACXX}")
    else()
      find_program(_zol2l_nvcc nvcc)
    endif()
    if(_zol2l_nvcc)
      # nvcc reports its own installation as "#$ TOP=<root>/bin/.."; no input file is read with --dryrun.
      execute_process(COMMAND "${_zol2l_nvcc}" --dryrun zol2l_probe.cu
                      OUTPUT_VARIABLE _zol2l_out ERROR_VARIABLE _zol2l_out RESULT_VARIABLE _zol2l_rc
                      TIMEOUT 60)
      if(_zol2l_out MATCHES "#\\$ TOP=([^\r\n]+)")
        get_filename_component(_zol2l_top "${CMAKE_MATCH_1}" REALPATH)
        if(IS_DIRECTORY "${_zol2l_top}")
          set(ZOL2L_EXT_CUDA_ROOT "${_zol2l_top}")
        endif()
      endif()
    endif()
    unset(_zol2l_nvcc CACHE)
    unset(_zol2l_nvcc)
  endif()
  if(NOT ZOL2L_EXT_CUDA_ROOT AND IS_DIRECTORY "/usr/local/cuda")
    set(ZOL2L_EXT_CUDA_ROOT "/usr/local/cuda")
  endif()
  if(ZOL2L_EXT_CUDA_ROOT)
    get_filename_component(ZOL2L_EXT_CUDA_ROOT "${ZOL2L_EXT_CUDA_ROOT}" REALPATH)
    if(NOT CUDA_TOOLKIT_ROOT_DIR)
      set(CUDA_TOOLKIT_ROOT_DIR "${ZOL2L_EXT_CUDA_ROOT}" CACHE PATH "CUDA toolkit root (for FindCUDA)")
    endif()
    if(NOT CUDAToolkit_ROOT)
      set(CUDAToolkit_ROOT "${ZOL2L_EXT_CUDA_ROOT}")
    endif()
    if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS "${ZOL2L_EXT_CUDA_ROOT}/bin/nvcc")
      set(CMAKE_CUDA_COMPILER "${ZOL2L_EXT_CUDA_ROOT}/bin/nvcc" CACHE FILEPATH "CUDA compiler")
    endif()
  endif()
  unset(_zol2l_cand)
  unset(_zol2l_out)
  unset(_zol2l_rc)
  unset(_zol2l_top)
endmacro()
