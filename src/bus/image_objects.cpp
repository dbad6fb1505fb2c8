#include "bus/image_objects.hpp"

#include <fcntl.h>

#include "bus/credentials.hpp"
#include "bus/errors.hpp"
#include "core/base/fs_at.hpp"
#include "core/base/names.hpp"
#include "core/machine/inspect.hpp"

namespace mk::bus {

namespace {

void check_name(const std::string& name) {
    if (!core::image_name_is_valid(name)) throw sdbus::Error(kInvalidArgs, "Image name '" + name + "' is invalid.");
}

[[noreturn]] void throw_busy(const std::string& name) {
    throw sdbus::Error("System.Error.EBUSY", "Image '" + name + "' is in use by a running machine: Device or resource busy");
}

std::map<std::string, std::string> parse_env(const std::string& text) { return core::parse_os_release(text); }

}  // namespace

std::string image_object_path(std::string_view name) {
    return "/org/freedesktop/machine1/image/" + core::bus_label_escape(name);
}

ImageService::~ImageService() { objects_.clear(); }

core::ImageInfo ImageService::get(const std::string& name, bool with_usage) {
    check_name(name);
    auto info = translate([&] { return pool_.find(name, with_usage); });
    if (!info) throw sdbus::Error(kNoSuchImage, "No image '" + name + "' known");
    return *info;
}

std::string ImageService::object_for(const std::string& name) {
    if (!objects_.contains(name)) objects_.emplace(name, std::make_unique<ImageObject>(connection_, *this, name));
    return image_object_path(name);
}

std::vector<core::ImageInfo> ImageService::list() {
    auto all = translate([&] { return pool_.list(true); });
    std::map<std::string, std::unique_ptr<ImageObject>> keep;
    for (const auto& i : all) {
        if (auto it = objects_.find(i.name); it != objects_.end())
            keep.emplace(i.name, std::move(it->second));
        else
            keep.emplace(i.name, std::make_unique<ImageObject>(connection_, *this, i.name));
    }
    objects_.swap(keep);
    return all;
}

void ImageService::check_not_busy(const core::ImageInfo& info) {
    if (core::image_in_use(machines_, info.path)) throw_busy(info.name);
}

void ImageService::remove(sdbus::IObject& obj, const std::string& name) {
    require_root(obj, "remove images");
    auto info = get(name);
    check_not_busy(info);
    translate([&] { pool_.remove(name); });
}

void ImageService::rename(sdbus::IObject& obj, const std::string& name, const std::string& new_name) {
    require_root(obj, "rename images");
    check_name(new_name);
    auto info = get(name);
    check_not_busy(info);
    translate([&] { pool_.rename(name, new_name); });
}

void ImageService::clone(sdbus::IObject& obj, const std::string& name, const std::string& new_name, bool read_only) {
    require_root(obj, "clone images");
    check_name(new_name);
    get(name);
    translate([&] { pool_.clone(name, new_name, read_only); });
}

void ImageService::mark_read_only(sdbus::IObject& obj, const std::string& name, bool read_only) {
    require_root(obj, "mark images read-only");
    auto info = get(name);
    check_not_busy(info);
    translate([&] { pool_.set_read_only(name, read_only); });
}

void ImageService::set_limit(sdbus::IObject& obj, const std::string& name, uint64_t limit) {
    require_root(obj, "set image limits");
    get(name);
    translate([&] { pool_.set_limit(name, limit); });
}

void ImageService::set_pool_limit(sdbus::IObject& obj, uint64_t limit) {
    require_root(obj, "set the pool limit");
    translate([&] { pool_.set_pool_limit(limit); });
}

std::string ImageService::read_in_image(const std::string& name, const char* const* candidates, bool* found) {
    auto info = get(name);
    if (info.type == core::ImageType::raw || info.type == core::ImageType::block)
        throw sdbus::Error(kNotSupported, "Reading files of raw or block images (which needs mounting them) is not supported by machd");
    return translate([&]() -> std::string {
        core::UniqueFd root(::openat(pool_.fd(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!root) throw std::system_error(errno, std::generic_category(), "cannot open image " + name);
        for (const char* const* c = candidates; *c; ++c)
            if (auto text = core::read_file_in_root(root.get(), *c)) {
                *found = true;
                return *text;
            }
        *found = false;
        return {};
    });
}

std::string ImageService::hostname(const std::string& name) {
    static const char* const files[] = {"/etc/hostname", nullptr};
    bool found = false;
    std::string text = read_in_image(name, files, &found);
    // First non-comment line, trimmed (read_etc_hostname()).
    size_t pos = 0;
    while (pos < text.size()) {
        size_t end = text.find('\n', pos);
        if (end == std::string::npos) end = text.size();
        std::string line = text.substr(pos, end - pos);
        pos = end + 1;
        auto b = line.find_first_not_of(" \t\r");
        if (b == std::string::npos || line[b] == '#') continue;
        auto e = line.find_last_not_of(" \t\r");
        return line.substr(b, e - b + 1);
    }
    return {};
}

std::vector<uint8_t> ImageService::machine_id(const std::string& name) {
    static const char* const files[] = {"/etc/machine-id", nullptr};
    bool found = false;
    std::string text = read_in_image(name, files, &found);
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    std::vector<uint8_t> id;
    if (text.size() != 32) return id;  // missing or uninitialized: empty, as machined
    for (size_t i = 0; i < 32; i += 2) {
        auto hex = [](char c) -> int {
            if (c >= '0' && c <= '9') return c - '0';
            if (c >= 'a' && c <= 'f') return c - 'a' + 10;
            if (c >= 'A' && c <= 'F') return c - 'A' + 10;
            return -1;
        };
        int hi = hex(text[i]), lo = hex(text[i + 1]);
        if (hi < 0 || lo < 0) return {};
        id.push_back(static_cast<uint8_t>(hi << 4 | lo));
    }
    return id;
}

std::map<std::string, std::string> ImageService::machine_info(const std::string& name) {
    static const char* const files[] = {"/etc/machine-info", nullptr};
    bool found = false;
    return parse_env(read_in_image(name, files, &found));
}

std::map<std::string, std::string> ImageService::os_release(const std::string& name) {
    static const char* const files[] = {"/etc/os-release", "/usr/lib/os-release", nullptr};
    bool found = false;
    auto text = read_in_image(name, files, &found);
    if (!found) throw sdbus::Error(kNotSupported, "Image '" + name + "' does not contain OS release information");
    return parse_env(text);
}

// ------------------------------------------------------------------------------------------ object

ImageObject::ImageObject(sdbus::IConnection& connection, ImageService& images, std::string name)
    : AdaptorInterfaces(connection, image_object_path(name)), images_(images), name_(std::move(name)) {
    registerAdaptor();
}

ImageObject::~ImageObject() { unregisterAdaptor(); }

void ImageObject::Remove() { images_.remove(getObject(), name_); }
void ImageObject::Rename(const std::string& new_name) { images_.rename(getObject(), name_, new_name); }
void ImageObject::Clone(const std::string& new_name, const bool& read_only) {
    images_.clone(getObject(), name_, new_name, read_only);
}
void ImageObject::MarkReadOnly(const bool& read_only) { images_.mark_read_only(getObject(), name_, read_only); }
void ImageObject::SetLimit(const uint64_t& limit) { images_.set_limit(getObject(), name_, limit); }
std::string ImageObject::GetHostname() { return images_.hostname(name_); }
std::vector<uint8_t> ImageObject::GetMachineID() { return images_.machine_id(name_); }
std::map<std::string, std::string> ImageObject::GetMachineInfo() { return images_.machine_info(name_); }
std::map<std::string, std::string> ImageObject::GetOSRelease() { return images_.os_release(name_); }

}  // namespace mk::bus
