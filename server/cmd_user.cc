// `cairn-server user add|passwd`: users of the API and the web UI (auth.db).

#include <termios.h>
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <memory>
#include <string>

#include "server/admin_cli.h"
#include "server/auth_store.h"

namespace cairn::server {
namespace {

// One line from the terminal with echo off (the line is not shown).
Result<std::string> ReadHidden(const std::string& prompt) {
  if (!::isatty(STDIN_FILENO)) {
    return Status::InvalidArgument("no terminal to read the password from; use --password-file");
  }
  std::cerr << prompt << std::flush;
  termios old_mode{};
  ::tcgetattr(STDIN_FILENO, &old_mode);
  termios quiet = old_mode;
  quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
  quiet.c_lflag |= ECHONL;
  ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
  std::string line;
  bool ok = static_cast<bool>(std::getline(std::cin, line));
  ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &old_mode);
  if (!ok) return Status::InvalidArgument("no password read");
  return line;
}

// The new password: the first line of `file`, or typed twice at the terminal.
Result<std::string> NewPassword(const std::string& file) {
  std::string password;
  if (!file.empty()) {
    std::ifstream in(file);
    if (!in) return Status::NotFound("cannot read " + file);
    std::getline(in, password);
    if (!password.empty() && password.back() == '\r') password.pop_back();
  } else {
    CAIRN_ASSIGN_OR_RETURN(password, ReadHidden("New password: "));
    CAIRN_ASSIGN_OR_RETURN(std::string again, ReadHidden("Repeat it: "));
    if (again != password) return Status::InvalidArgument("the passwords differ; nothing changed");
  }
  if (password.empty()) return Status::InvalidArgument("the password is empty; nothing changed");
  return password;
}

struct UserCommand {
  CLI::App* add = nullptr;
  CLI::App* passwd = nullptr;
  std::string name;
  std::string password_file;

  void Add(CLI::App& app) {
    auto* user = app.add_subcommand("user", "manage users");
    user->require_subcommand(1);
    add = user->add_subcommand("add", "add a user");
    add->add_option("NAME", name)->required();
    passwd = user->add_subcommand("passwd", "set a user's password (for the web UI's login)");
    passwd->add_option("NAME", name)->required();
    passwd->add_option("--password-file", password_file,
                       "take the password from this file's first line (default: ask twice)");
  }

  int Execute(const Admin& admin) {
    if (Status s = admin.auth->AddUser(name); !s.ok()) return FailCommand(s);
    std::cout << "user " << name << " added\n";
    return 0;
  }

  // Works while the server runs (auth.db is shared in WAL mode); the user's
  // web sessions end at their next request (their credential stamp changed).
  int Passwd(const Admin& admin) {
    auto password = NewPassword(password_file);
    if (!password.ok()) return FailCommand(password.status());
    if (Status s = admin.auth->SetPassword(name, *password); !s.ok()) return FailCommand(s);
    std::cout << "password of " << name << " set\n";
    return 0;
  }
};

}  // namespace

void AddUserCommands(CLI::App& app, std::vector<AdminCommand>* commands) {
  auto c = std::make_shared<UserCommand>();
  c->Add(app);
  commands->push_back({c->add, [c](const std::string& data) {
                         return WithAdmin(data, [&](const Admin& a) { return c->Execute(a); });
                       }});
  commands->push_back({c->passwd, [c](const std::string& data) {
                         return WithAdmin(data, [&](const Admin& a) { return c->Passwd(a); });
                       }});
}

}  // namespace cairn::server
