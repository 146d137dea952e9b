# Debian packages built by CPack (`cmake --build build --target package`):
#   cairn-server  the server, its web UI, cairn-server.service, /etc/cairn/server.conf
#   cairn-client  cairn, cairn-backup.service + .timer, /etc/cairn/backup.conf (0600)
# each with its man page (help2man, from the real --help) and bash completion.
# Included from the top-level CMakeLists.txt; everything else lives here.
#
# CAIRN_PACKAGE_RELEASE is the Debian revision (N+1 of the same tree:
# `cpack -D CPACK_DEBIAN_PACKAGE_RELEASE=2`, as tests/package/package_test.sh does).

include(GNUInstallDirs)
set(CAIRN_PKG_DIR ${PROJECT_SOURCE_DIR}/packaging)
set(CAIRN_PACKAGE_RELEASE 1 CACHE STRING "Debian revision of the packages")

# --- man pages, generated from --help at build time ---------------------------
find_program(CAIRN_HELP2MAN help2man)
set(CAIRN_MAN_DIR ${PROJECT_BINARY_DIR}/man)
if(CAIRN_HELP2MAN)
  add_custom_command(
    OUTPUT ${CAIRN_MAN_DIR}/cairn-server.8.gz
    COMMAND ${CMAKE_COMMAND} -E make_directory ${CAIRN_MAN_DIR}
    COMMAND ${CAIRN_HELP2MAN} --no-info --no-discard-stderr --section=8
      --name "backup server for QEMU/KVM virtual machines"
      --include ${CAIRN_PKG_DIR}/man/cairn-server.h2m
      --output ${CAIRN_MAN_DIR}/cairn-server.8 $<TARGET_FILE:cairn-server>
    COMMAND gzip -9nf ${CAIRN_MAN_DIR}/cairn-server.8
    DEPENDS cairn-server ${CAIRN_PKG_DIR}/man/cairn-server.h2m
    COMMENT "help2man cairn-server.8")
  add_custom_command(
    OUTPUT ${CAIRN_MAN_DIR}/cairn.1.gz
    COMMAND ${CMAKE_COMMAND} -E make_directory ${CAIRN_MAN_DIR}
    COMMAND ${CAIRN_HELP2MAN} --no-info --no-discard-stderr --section=1
      --name "back up QEMU/KVM virtual machines to a cairn-server"
      --include ${CAIRN_PKG_DIR}/man/cairn.h2m
      --output ${CAIRN_MAN_DIR}/cairn.1 $<TARGET_FILE:cairn>
    COMMAND gzip -9nf ${CAIRN_MAN_DIR}/cairn.1
    DEPENDS cairn ${CAIRN_PKG_DIR}/man/cairn.h2m
    COMMENT "help2man cairn.1")
  add_custom_target(cairn_man ALL
    DEPENDS ${CAIRN_MAN_DIR}/cairn-server.8.gz ${CAIRN_MAN_DIR}/cairn.1.gz)
  install(FILES ${CAIRN_MAN_DIR}/cairn-server.8.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man8
          COMPONENT server)
  install(FILES ${CAIRN_MAN_DIR}/cairn.1.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man1
          COMPONENT client)
else()
  message(STATUS "help2man not found: the packages get no man pages (apt-get install help2man)")
endif()

# --- cairn-server -------------------------------------------------------------
install(TARGETS cairn-server RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT server)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/web/ DESTINATION ${CMAKE_INSTALL_DATADIR}/cairn/web
        COMPONENT server PATTERN README.md EXCLUDE)
install(FILES ${CAIRN_PKG_DIR}/systemd/cairn-server.service DESTINATION lib/systemd/system
        COMPONENT server)
install(FILES ${CAIRN_PKG_DIR}/server.conf.example DESTINATION /etc/cairn RENAME server.conf
        PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ COMPONENT server)
install(FILES ${CAIRN_PKG_DIR}/bash-completion/cairn-completion.bash
        DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions RENAME cairn-server
        COMPONENT server)

# --- cairn-client -------------------------------------------------------------
install(TARGETS cairn RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT client)
install(FILES ${CAIRN_PKG_DIR}/bash-completion/cairn-completion.bash
        DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions RENAME cairn
        COMPONENT client)
# The nightly host backups' units and settings (their own work; present
# once it is merged).
set(CAIRN_CLIENT_CONFFILES "")
foreach(unit cairn-backup.service cairn-backup.timer)
  if(EXISTS ${CAIRN_PKG_DIR}/systemd/${unit})
    install(FILES ${CAIRN_PKG_DIR}/systemd/${unit} DESTINATION lib/systemd/system
            COMPONENT client)
  endif()
endforeach()
if(EXISTS ${CAIRN_PKG_DIR}/backup.conf.example)
  install(FILES ${CAIRN_PKG_DIR}/backup.conf.example DESTINATION /etc/cairn RENAME backup.conf
          PERMISSIONS OWNER_READ OWNER_WRITE COMPONENT client)
  set(CAIRN_CLIENT_CONFFILES "/etc/cairn/backup.conf\n")
endif()

# Debian's copyright and changelog files in each package's doc folder.
set(CAIRN_DEB_CHANGELOG ${PROJECT_BINARY_DIR}/packaging/changelog.Debian.gz)
add_custom_command(
  OUTPUT ${CAIRN_DEB_CHANGELOG}
  COMMAND gzip -9nc ${CAIRN_PKG_DIR}/debian/changelog > ${CAIRN_DEB_CHANGELOG}
  DEPENDS ${CAIRN_PKG_DIR}/debian/changelog)
add_custom_target(cairn_deb_changelog ALL DEPENDS ${CAIRN_DEB_CHANGELOG})
foreach(component server client)
  install(FILES ${CAIRN_PKG_DIR}/debian/copyright ${CAIRN_DEB_CHANGELOG}
          DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/cairn-${component} COMPONENT ${component})
endforeach()

# Files under /etc are the admin's (dpkg keeps their edits on upgrade).
file(WRITE ${PROJECT_BINARY_DIR}/packaging/server/conffiles "/etc/cairn/server.conf\n")
file(WRITE ${PROJECT_BINARY_DIR}/packaging/client/conffiles "${CAIRN_CLIENT_CONFFILES}")
set(CAIRN_CLIENT_EXTRA
    ${CAIRN_PKG_DIR}/debian/client/postinst ${CAIRN_PKG_DIR}/debian/client/prerm
    ${CAIRN_PKG_DIR}/debian/client/postrm)
if(CAIRN_CLIENT_CONFFILES)
  list(APPEND CAIRN_CLIENT_EXTRA ${PROJECT_BINARY_DIR}/packaging/client/conffiles)
endif()

# --- CPack ----------------------------------------------------------------------
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME cairn)
set(CPACK_PACKAGE_VENDOR "Cairn")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "Cairn maintainers <maintainers@cairn-backup.org>")
set(CPACK_STRIP_FILES ON)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_PACKAGE_DIRECTORY ${PROJECT_BINARY_DIR}/packages)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL server client)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE ${CAIRN_PACKAGE_RELEASE})
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://github.com/cairn-backup/cairn")
set(CPACK_DEBIAN_COMPRESSION_TYPE xz)

set(CPACK_DEBIAN_SERVER_PACKAGE_NAME cairn-server)
set(CPACK_COMPONENT_SERVER_DESCRIPTION
    "backup server for QEMU/KVM virtual machines\nCairn's server stores deduplicated, verified snapshots of virtual disks sent\nby the cairn client, prunes, collects garbage and verifies on a schedule, and\nshows it all in a web UI.")
set(CPACK_DEBIAN_SERVER_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_SERVER_PACKAGE_CONTROL_EXTRA
    ${CAIRN_PKG_DIR}/debian/server/postinst ${CAIRN_PKG_DIR}/debian/server/prerm
    ${CAIRN_PKG_DIR}/debian/server/postrm ${PROJECT_BINARY_DIR}/packaging/server/conffiles)
set(CPACK_DEBIAN_SERVER_PACKAGE_CONTROL_STRICT_PERMISSION ON)

set(CPACK_DEBIAN_CLIENT_PACKAGE_NAME cairn-client)
set(CPACK_COMPONENT_CLIENT_DESCRIPTION
    "back up QEMU/KVM virtual machines to a cairn-server\nThe cairn client backs up running VMs over QMP with persistent dirty bitmaps\n(only changed chunks travel), disk images of shut-off VMs, and restores them.")
# libvirt0, libnbd0 and libxml2 are dlopen'ed (client/dynamic_library.h):
# named here, since dpkg-shlibdeps only sees linked libraries.
set(CPACK_DEBIAN_CLIENT_PACKAGE_DEPENDS "qemu-utils, qemu-system-common, libvirt0, libnbd0, libxml2")
set(CPACK_DEBIAN_CLIENT_PACKAGE_CONTROL_EXTRA ${CAIRN_CLIENT_EXTRA})
set(CPACK_DEBIAN_CLIENT_PACKAGE_CONTROL_STRICT_PERMISSION ON)

include(CPack)
