#include "bus/image_objects.hpp"

#include <fcntl.h>

#include "bus/credentials.hpp"
#include "bus/errors.hpp"
#include "bus/names.hpp"
#include "bus/polkit.hpp"
#include "core/base/fs_at.hpp"
#include "core/base/names.hpp"
#include "core/image/image_files.hpp"
#include "core/machine/inspect.hpp"

namespace mk::bus {

namespace {

void check_name(const std::string& name) {
    if (!core::image_name_is_valid(name)) throw bus_error(kInvalidArgs, "Image name '" + name + "' is invalid.");
}

[[noreturn]] void throw_busy(const std::string& name) {
    throw bus_error("System.Error.EBUSY", "Image '" + name + "' is in use by a running machine: Device or resource busy");
}

}  // namespace

std::string image_object_path(std::string_view name) {
    return std::string(kImagePathPrefix) + "/" + core::bus_label_escape(name);
}

ImageService::~ImageService() { objects_.clear(); }

core::ImageInfo ImageService::get(const std::string& name, bool with_usage) {
    check_name(name);
    auto info = translate([&] { return pool_.find(name, with_usage); });
    if (!info) throw bus_error(kNoSuchImage, "No image '" + name + "' known");
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
        if (auto it = objects_.find(i.name); it != objects_.end()) keep.emplace(i.name, std::move(it->second));
        else keep.emplace(i.name, std::make_unique<ImageObject>(connection_, *this, i.name));
    }
    objects_.swap(keep);
    return all;
}

bool ImageService::busy(const core::ImageInfo& info) {
    return core::image_in_use(machines_, info.path);  // a machine runs from the image (or inside it)
}

void ImageService::check_not_busy(const core::ImageInfo& info) {
    if (busy(info)) throw_busy(info.name);
}

void ImageService::remove(sdbus::IObject& obj, const std::string& name) {
    require_action(obj, kPolkitManageImages, "removing images");
    auto info = get(name);
    check_not_busy(info);
    translate([&] { pool_.remove(name); });
}

void ImageService::rename(sdbus::IObject& obj, const std::string& name, const std::string& new_name) {
    require_action(obj, kPolkitManageImages, "renaming images");
    check_name(new_name);
    auto info = get(name);
    check_not_busy(info);
    translate([&] { pool_.rename(name, new_name); });
}

void ImageService::clone(sdbus::IObject& obj, const std::string& name, const std::string& new_name, bool read_only) {
    require_action(obj, kPolkitManageImages, "cloning images");
    check_name(new_name);
    get(name);
    translate([&] { pool_.clone(name, new_name, read_only); });
}

void ImageService::mark_read_only(sdbus::IObject& obj, const std::string& name, bool read_only) {
    require_action(obj, kPolkitManageImages, "marking images read-only");
    auto info = get(name);
    check_not_busy(info);
    translate([&] { pool_.set_read_only(name, read_only); });
}

void ImageService::set_limit(sdbus::IObject& obj, const std::string& name, uint64_t limit) {
    require_action(obj, kPolkitManageImages, "setting image limits");
    get(name);
    translate([&] { pool_.set_limit(name, limit); });
}

void ImageService::set_pool_limit(sdbus::IObject& obj, uint64_t limit) {
    require_action(obj, kPolkitManageMachines, "setting the pool limit");
    translate([&] { pool_.set_pool_limit(limit); });
}

core::UniqueFd ImageService::open_root(const std::string& name) {
    auto info = get(name);
    return translate([&] { return core::open_image_root(pool_, info); });
}

std::string ImageService::hostname(const std::string& name) {
    auto root = open_root(name);
    return translate([&] { return core::image_hostname(root.get()); });
}

std::vector<uint8_t> ImageService::machine_id(const std::string& name) {
    auto root = open_root(name);
    auto id = translate([&] { return core::image_machine_id(root.get()); });
    if (!id) return {};  // missing or uninitialized: empty, as machined
    return std::vector<uint8_t>(id->begin(), id->end());
}

std::map<std::string, std::string> ImageService::machine_info(const std::string& name) {
    auto root = open_root(name);
    return translate([&] { return core::image_machine_info(root.get()); });
}

std::map<std::string, std::string> ImageService::os_release(const std::string& name) {
    auto root = open_root(name);
    auto os = translate([&] { return core::image_os_release(root.get()); });
    if (!os) throw bus_error(kNotSupported, "Image '" + name + "' does not contain OS release information");
    return *os;
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
